"""One step of a training's rounds: observe the aggregator and the fleet, record what changed,
ask the pure decision core (`controller.core.decide`), act.

Level-triggered: everything a step needs is what the aggregator and the fleet say now plus
`Bookkeeping`, which the caller persists (the operator in the training's status, the local
runner in memory). A step after a restart, given the same bookkeeping, decides the same.
A round's ending is counted once: only when the recorder has not recorded it as ended yet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedfleet import vocabulary as vocab
from fedfleet.api.status import ControllerState
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.controller import core
from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy
from fedfleet.rounds.ports import (
    AggregatorError,
    AggregatorPort,
    AggregatorView,
    FleetPort,
    FleetState,
    RoundRecorder,
    RoundSnapshot,
)

Clock = Callable[[], float]


@dataclass
class Bookkeeping:
    """What the driver remembers between steps (the aggregator's checkpoints hold the rest)."""

    round_failures: dict[int, int] = field(default_factory=dict)  # round -> failed attempts
    last_failure: str = ""
    waiting_since: float | None = None  # wall clock: when the next round began waiting for clients
    evaluated: bool = False  # the final model's evaluation round succeeded

    def attempt(self, number: int) -> int:
        return self.round_failures.get(number, 0) + 1

    def store(self, record: ControllerState) -> None:
        """Into the operator's record of the training (`status.controller`)."""
        record.round_failures = {str(k): v for k, v in self.round_failures.items()}
        record.last_failure = self.last_failure
        record.waiting_since = self.waiting_since
        record.evaluated = self.evaluated

    @classmethod
    def of(cls, record: ControllerState) -> Bookkeeping:
        return cls(
            round_failures={int(k): int(v) for k, v in record.round_failures.items()},
            last_failure=record.last_failure,
            waiting_since=record.waiting_since,
            evaluated=record.evaluated,
        )


@dataclass(frozen=True)
class Step:
    action: core.Action
    view: AggregatorView
    fleet: FleetState


@dataclass(frozen=True)
class Unreachable:
    """The aggregator's status could not be read: nothing was observed, recorded or done."""

    error: AggregatorError


@dataclass
class RoundDriver:
    spec: FederatedTrainingSpec
    aggregator: AggregatorPort
    fleet: FleetPort
    recorder: RoundRecorder
    clock: Clock = time.time

    @property
    def expected(self) -> int:
        return self.spec.expected_clients()

    async def step(self, book: Bookkeeping) -> Step | Unreachable:
        """Observe, record, decide, act; `book` is updated in place. An aggregator error after
        its status was read (`AggregatorUnavailable`, `AggregatorRefused`) ends the step there."""
        try:
            view = await self.aggregator.status()
        except AggregatorError as err:
            return Unreachable(err)
        fleet = await self.fleet.observe()
        if view.current is not None:
            await self._record(view, view.current, book)
            await self._drop_down_clients(view.current, fleet)
        for completed in view.recent[-2:]:  # a round's evaluation arrives with the next round
            evaluation = {k: v for k, v in completed.metrics.items() if k.startswith("eval_")}
            if evaluation:
                await self.recorder.evaluation_attached(completed.number, evaluation)
        now = self.clock()
        observation = core.Observation(
            model_version=view.model_version,
            ready_clients=tuple(c for c in view.ready_clients if c in fleet.live),
            live_clients=len(fleet.live),
            current=view.current.view if view.current is not None else None,
            evaluated=book.evaluated,
            round_failures=dict(book.round_failures),
            last_failure=book.last_failure,
            waiting_seconds=now - (book.waiting_since if book.waiting_since is not None else now),
            released=view.released,
        )
        action = core.decide(self.spec, observation, self.expected)
        await self.recorder.training_progress(view, self.epsilon(view.released))
        await self._act(action, view, book, now)
        return Step(action, view, fleet)

    async def _record(self, view: AggregatorView, state: RoundSnapshot, book: Bookkeeping) -> None:
        recorded = await self.recorder.recorded(state.number, state.kind)
        attempt = book.attempt(state.number)
        if recorded is None:  # running unrecorded (its record was lost): adopt it
            deadline = max(0.0, state.deadline_unix - state.started_unix)
            start = core.StartRound(state.number, state.kind, state.participants, deadline, state.min_clients)
            await self.recorder.round_started(start, attempt)
        elif recorded in vocab.FINAL_PHASES:  # its ending is on the record and was counted
            if state.kind == vocab.EVALUATE and recorded == vocab.SUCCEEDED:
                book.evaluated = True
            return
        await self.recorder.round_changed(state, attempt, self._round_epsilon(view, state))
        if state.phase == vocab.FAILED and state.aborted:  # a suspend's choice: runs again, not counted
            await self.recorder.round_aborted(state)
        elif state.phase == vocab.FAILED:
            book.round_failures[state.number] = attempt
            book.last_failure = state.reason
            await self.recorder.round_failed(state, attempt)
        elif state.phase == vocab.SUCCEEDED:
            book.evaluated = book.evaluated or state.kind == vocab.EVALUATE
            await self.recorder.round_succeeded(state)

    async def _drop_down_clients(self, state: RoundSnapshot, fleet: FleetState) -> None:
        """A participant the fleet says is down will not report: tell the aggregator at once
        instead of letting the round wait for it until its deadline."""
        if not state.active:
            return
        settled = set(state.reported) | set(state.dropped)
        for client, reason in sorted(fleet.down.items()):
            if client in state.participants and client not in settled:
                await self.aggregator.drop(state.number, client, reason)

    async def _act(self, action: core.Action, view: AggregatorView, book: Bookkeeping, now: float) -> None:
        if isinstance(action, core.StartRound):
            await self.recorder.round_started(action, book.attempt(action.number))
            state = await self.aggregator.start_round(action)
            book.waiting_since = None
            if action.kind == vocab.TRAIN:
                book.evaluated = False  # a final evaluation before spec.rounds grew was of another model
            await self.recorder.round_changed(
                state, book.attempt(action.number), self._round_epsilon(view, state)
            )
        elif isinstance(action, core.WaitForClients):
            book.waiting_since = book.waiting_since if book.waiting_since is not None else now
        elif isinstance(action, core.Finish):
            await self.aggregator.finish()
            await self.recorder.training_finished(action, view)
        elif isinstance(action, core.FailTraining):
            await self.aggregator.finish()
            await self.recorder.training_failed(action.reason)
        elif isinstance(action, core.AbortRound):
            await self.aggregator.abort(action.number, "the training is suspended (AbortRound)")
        elif isinstance(action, core.Suspend):
            book.waiting_since = None
            await self.recorder.training_suspended(view)

    def epsilon(self, released: Released) -> float | None:
        return epsilon_after(self.spec, released, self.expected)

    def _round_epsilon(self, view: AggregatorView, state: RoundSnapshot) -> float | None:
        """The training's epsilon once this round was released; None for a round without DP.
        The round is the newest (the current one, or the one just started, which is released
        only when it ran before): every released round is at or before it."""
        return self.epsilon(view.released) if state.privacy is not None else None


Released = tuple[RoundPrivacy | ReleasedRounds, ...]


def epsilon_after(spec: FederatedTrainingSpec, released: Released, population: int) -> float | None:
    """The training's epsilon after the `released` rounds; None when privacy is off."""
    if not spec.privacy.enabled:
        return None
    from fedfleet.privacy.budget import epsilon_spent  # dp-accounting: only trainings with DP

    value = epsilon_spent(spec.privacy, released, max(1, population))
    return value if math.isfinite(value) else None
