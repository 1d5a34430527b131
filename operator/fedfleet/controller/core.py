"""The reconcile core shared by the Kubernetes operator and the local runner.

Level-triggered: from the spec and what is observed now it returns the one next step, so it
can run again after any restart and reach the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedfleet.api.training import FederatedTrainingSpec, RetrySpec

ACTIVE_PHASES = frozenset({"Pending", "Training", "Aggregating"})
SCHEDULING_GRACE_SECONDS = 30.0
SECURE_MIN_CLIENTS = 3


@dataclass(frozen=True)
class RoundView:
    number: int
    kind: str  # train, evaluate
    phase: str
    reason: str = ""


@dataclass(frozen=True)
class Observation:
    model_version: int  # completed training rounds, as the aggregator's checkpoints say
    ready_clients: tuple[str, ...]  # clients waiting for a round
    live_clients: int  # clients not given up on
    current: RoundView | None = None
    evaluated: bool = False  # the final model's evaluation round is done (or was given up)
    round_failures: Mapping[int, int] = field(default_factory=dict)
    last_failure: str = ""
    waiting_seconds: float = 0.0  # how long the next round has waited for clients


@dataclass(frozen=True)
class StartRound:
    number: int
    kind: str
    participants: tuple[str, ...]
    timeout_seconds: float
    min_clients: int


@dataclass(frozen=True)
class WatchRound:
    number: int


@dataclass(frozen=True)
class WaitForClients:
    reason: str


@dataclass(frozen=True)
class Finish:
    pass


@dataclass(frozen=True)
class FailTraining:
    reason: str


Action = StartRound | WatchRound | WaitForClients | Finish | FailTraining


def decide(spec: FederatedTrainingSpec, obs: Observation, expected_clients: int) -> Action:
    if obs.current is not None and obs.current.phase in ACTIVE_PHASES:
        return WatchRound(obs.current.number)
    training_done = obs.model_version >= spec.rounds
    if training_done and obs.evaluated:
        return Finish()
    kind = "evaluate" if training_done else "train"
    number = obs.model_version if training_done else obs.model_version + 1
    failures = obs.round_failures.get(number, 0)
    if failures >= spec.retry.max_round_attempts:
        if training_done:
            return Finish()  # the model is trained; only its final evaluation failed
        return FailTraining(f"round {number} failed {failures} times; last: {obs.last_failure}")
    needed = spec.min_clients if training_done else clients_needed(spec)  # evaluation rounds are not masked
    if obs.live_clients < needed:
        reason = f"minClients {spec.min_clients}" if training_done else _needed_reason(spec)
        return FailTraining(f"{obs.live_clients} clients left, fewer than {reason}")
    ready = tuple(sorted(obs.ready_clients))
    enough = len(ready) >= needed
    everyone = min(expected_clients, obs.live_clients)  # clients given up on are not waited for
    if len(ready) >= everyone or (enough and obs.waiting_seconds >= SCHEDULING_GRACE_SECONDS):
        return StartRound(number, kind, ready, spec.round_timeout_seconds, min(spec.min_clients, len(ready)))
    return WaitForClients(f"{len(ready)} of {expected_clients} clients ready")


def clients_needed(spec: FederatedTrainingSpec) -> int:
    """A round needs minClients updates, and SecAgg+ needs 3 participants: it is never dropped silently."""
    return max(spec.min_clients, SECURE_MIN_CLIENTS if spec.secure_aggregation.enabled else 1)


def _needed_reason(spec: FederatedTrainingSpec) -> str:
    if clients_needed(spec) > spec.min_clients:
        return f"the {SECURE_MIN_CLIENTS} secure aggregation needs"
    return f"minClients {spec.min_clients}"


def restart_delay(retry: RetrySpec, starts_so_far: int) -> float | None:
    """Backoff before the next start of a failed client; None once it has used all its attempts."""
    if starts_so_far >= retry.max_attempts:
        return None
    return float(retry.backoff_seconds * 2 ** max(0, starts_so_far - 1))
