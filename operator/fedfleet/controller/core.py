"""The reconcile core shared by the Kubernetes operator and the local runner.

Level-triggered: from the spec and what is observed now it returns the one next step, so it
can run again after any restart and reach the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedfleet import vocabulary as vocab
from fedfleet.api.training import FederatedTrainingSpec, RetrySpec
from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy

ACTIVE_PHASES = vocab.ACTIVE_ROUND_PHASES
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
    released: tuple[RoundPrivacy | ReleasedRounds, ...] = ()  # DP records of the completed rounds (grouped)


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


BUDGET_EXHAUSTED = "PrivacyBudgetExhausted"


@dataclass(frozen=True)
class Finish:
    reason: str = ""  # "" (all rounds done) or BUDGET_EXHAUSTED
    message: str = ""


@dataclass(frozen=True)
class FailTraining:
    reason: str


@dataclass(frozen=True)
class AbortRound:
    """spec.suspend with suspendPolicy AbortRound: fail the round in flight now."""

    number: int


@dataclass(frozen=True)
class Suspend:
    """spec.suspend and no round in flight: start nothing."""


Action = StartRound | WatchRound | WaitForClients | Finish | FailTraining | AbortRound | Suspend


def decide(spec: FederatedTrainingSpec, obs: Observation, expected_clients: int) -> Action:
    if obs.current is not None and obs.current.phase in ACTIVE_PHASES:
        if spec.suspend and spec.suspend_policy == "AbortRound":
            return AbortRound(obs.current.number)
        return WatchRound(obs.current.number)  # suspended with FinishRound: it closes first
    if spec.suspend:
        return Suspend()
    training_done = obs.model_version >= spec.rounds or _budget_stop(spec, obs, expected_clients) is not None
    if obs.evaluated and training_done:  # the final evaluation runs once training is over (all rounds, or
        return _finish(spec, obs, expected_clients)  # the budget); spec.rounds may have grown since
    kind = "evaluate" if training_done else "train"
    number = obs.model_version if training_done else obs.model_version + 1
    failures = obs.round_failures.get(number, 0)
    if failures >= spec.retry.max_round_attempts:
        if training_done:
            return _finish(spec, obs, expected_clients)  # the model is trained; its evaluation failed
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


def _budget_stop(spec: FederatedTrainingSpec, obs: Observation, population: int) -> str | None:
    """Why the next training round must not run (epsilon would pass the budget), or None.

    Charged at its worst: the whole cohort the round would wait for (the largest sampling rate)
    and, distributed, only minClients survivors (the least noise). The real charge, from the
    round's record, is never more.
    """
    if obs.model_version >= spec.rounds or not spec.privacy.enabled or spec.privacy.epsilon_budget is None:
        return None
    from fedfleet.privacy.budget import check_budget  # dp-accounting: imported only when needed

    cohort = max(1, min(population, obs.live_clients))
    check = check_budget(spec.privacy, obs.released, population, cohort, min(spec.min_clients, cohort))
    if check is None or not check.exceeded:
        return None
    return check.message(obs.model_version + 1)


def _finish(spec: FederatedTrainingSpec, obs: Observation, population: int) -> Finish:
    if obs.model_version >= spec.rounds:
        return Finish()
    message = f"stopped after {obs.model_version} of {spec.rounds} rounds"
    if spec.privacy.enabled and spec.privacy.epsilon_budget is not None:
        from fedfleet.privacy.budget import epsilon_spent

        spent = epsilon_spent(spec.privacy, obs.released, population)
        message += f": epsilon {spent:.4g} of epsilonBudget {spec.privacy.epsilon_budget:g} spent"
    return Finish(BUDGET_EXHAUSTED, message)


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
