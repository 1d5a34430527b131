"""In-memory fakes of the round driver's three ports (`fedfleet.rounds.ports`), for unit tests
of the driver that run in milliseconds. The fake aggregator keeps the rules of the real one
that the driver relies on: it starts only round version + 1 (or an evaluation of the current
version), a repeated start of a finished training round returns its record, a drop applies only
to a participant that has not reported, and the last round stays `current` until the next starts.
The real adapters are tested end to end (tests/local, tests/controller)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from fedfleet import vocabulary as vocab
from fedfleet.controller import core
from fedfleet.privacy.release import RoundPrivacy, group_released
from fedfleet.rounds.ports import (
    AggregatorRefused,
    AggregatorUnavailable,
    AggregatorView,
    FleetState,
    RoundSnapshot,
)


class RecordRefused(Exception):
    pass


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeAggregator:
    clock: Clock
    ready: set[str] = field(default_factory=set)
    model_version: int = 0
    current: RoundSnapshot | None = None
    history: list[RoundSnapshot] = field(default_factory=list)
    finished: bool = False
    reachable: bool = True
    drops: list[tuple[int, str, str]] = field(default_factory=list)
    starts: list[core.StartRound] = field(default_factory=list)

    def _check(self) -> None:
        if not self.reachable:
            raise AggregatorUnavailable("UNAVAILABLE: connection refused")

    async def status(self) -> AggregatorView:
        self._check()
        released = group_released(r.privacy for r in self.history if r.privacy is not None)
        return AggregatorView(
            model_version=self.model_version,
            model_digest=f"sha256:{self.model_version}",
            ready_clients=tuple(sorted(self.ready)),
            current=self.current,
            recent=tuple(self.history[-2:]),
            released=released,
            finished=self.finished,
        )

    async def start_round(self, start: core.StartRound) -> RoundSnapshot:
        self._check()
        if self.finished:
            raise AggregatorRefused("FAILED_PRECONDITION: the training is finished")
        current = self.current
        if current is not None and current.active:
            if (current.number, current.kind) == (start.number, start.kind):
                return current  # a controller retrying its own request
            raise AggregatorRefused(f"FAILED_PRECONDITION: round {current.number} is still {current.phase}")
        if start.kind == vocab.TRAIN and 0 < start.number <= self.model_version:
            return self.history[start.number - 1]
        expected = self.model_version + 1 if start.kind == vocab.TRAIN else self.model_version
        if start.number != expected:
            raise AggregatorRefused(f"FAILED_PRECONDITION: the next {start.kind} round is {expected}")
        self.starts.append(start)
        now = self.clock()
        self.current = RoundSnapshot(
            number=start.number,
            kind=start.kind,  # type: ignore[arg-type]
            phase="Training",
            participants=start.participants,
            min_clients=start.min_clients,
            started_unix=now,
            deadline_unix=now + start.timeout_seconds,
        )
        self.ready -= set(start.participants)
        return self.current

    async def drop(self, number: int, client: str, reason: str) -> None:
        """As the aggregator: a round whose participants all reported or dropped closes."""
        self.drops.append((number, client, reason))
        round_ = self.current
        if round_ is None or round_.number != number or not round_.active:
            return
        if client in round_.participants and client not in round_.reported + round_.dropped:
            self.current = round_ = dataclasses.replace(round_, dropped=(*round_.dropped, client))
        if len(round_.reported) + len(round_.dropped) == len(round_.participants):
            if len(round_.reported) < round_.min_clients:
                self.fail(f"all participants accounted for with {len(round_.reported)} reported")
            else:
                self.succeed()

    async def abort(self, number: int, reason: str) -> RoundSnapshot:
        """As the aggregator: the open round fails now, marked aborted; repeating it changes nothing."""
        self._check()
        round_ = self.current
        if round_ is None or round_.number != number:
            raise AggregatorRefused(f"NOT_FOUND: round {number} is not the current round")
        if round_.active:
            self.fail(f"aborted: {reason}")
            self.current = dataclasses.replace(self.current, aborted=True)  # type: ignore[arg-type]
        assert self.current is not None
        return self.current

    async def finish(self) -> None:
        self._check()
        self.finished = True

    async def watch(self, number: int) -> AsyncIterator[RoundSnapshot]:
        if self.current is not None and self.current.number == number:
            yield self.current

    # -- what the clients and the round's ending do ----------------------------------------------
    def report(self, *clients: str) -> None:
        assert self.current is not None
        self.current = dataclasses.replace(self.current, reported=(*self.current.reported, *clients))

    def succeed(
        self, metrics: Mapping[str, float] | None = None, privacy: RoundPrivacy | None = None
    ) -> None:
        """The open round closes with every participant that has not dropped reporting."""
        round_ = self.current
        assert round_ is not None and round_.active
        reported = tuple(c for c in round_.participants if c not in round_.dropped)
        closed = dataclasses.replace(
            round_,
            phase="Succeeded",
            reported=reported,
            metrics=dict(metrics or {"train_loss": 1.0 / round_.number}),
            finished_unix=self.clock() + 1,
            privacy=privacy if round_.kind == vocab.TRAIN else None,
        )
        self.current = closed
        if closed.kind == vocab.TRAIN:
            self.model_version = closed.number
            self.history.append(closed)
        self.ready |= set(reported)

    def fail(self, reason: str) -> None:
        assert self.current is not None and self.current.active
        self.current = dataclasses.replace(self.current, phase="Failed", reason=reason)
        self.ready |= set(self.current.participants) - set(self.current.dropped)

    def evaluated(self, number: int, metrics: Mapping[str, float]) -> None:
        """eval_* of training round `number`'s model, measured by a later round's clients."""
        index = number - 1
        merged = dict(self.history[index].metrics) | dict(metrics)
        self.history[index] = dataclasses.replace(self.history[index], metrics=merged)


@dataclass
class FakeFleet:
    live: set[str]
    down: dict[str, str] = field(default_factory=dict)

    async def observe(self) -> FleetState:
        return FleetState(frozenset(self.live), dict(self.down))


@dataclass
class FakeRecorder:
    """Keeps what was recorded, in order, and each round's recorded phase."""

    phases: dict[tuple[int, str], str] = field(default_factory=dict)
    attempts: dict[tuple[int, str], int] = field(default_factory=dict)
    log: list[tuple[object, ...]] = field(default_factory=list)
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)
    finished: core.Finish | None = None
    failed: str | None = None
    progress: list[tuple[int, float | None]] = field(default_factory=list)  # (model version, epsilon)
    refuse_writes: bool = False  # the record cannot be written (as an API error would)

    def events(self, *names: str) -> list[tuple[object, ...]]:
        return [e for e in self.log if e[0] in names]

    async def recorded(self, number: int, kind: vocab.RoundKind) -> str | None:
        return self.phases.get((number, kind))

    async def round_started(self, start: core.StartRound, attempt: int) -> None:
        self.phases[(start.number, start.kind)] = ""
        self.attempts[(start.number, start.kind)] = attempt
        self.log.append(("started", start.kind, start.number, attempt))

    async def round_changed(self, state: RoundSnapshot, attempt: int, epsilon: float | None) -> None:
        if self.refuse_writes:
            raise RecordRefused(f"round {state.number} not recorded")
        self.phases[(state.number, state.kind)] = state.phase
        self.log.append(("changed", state.kind, state.number, state.phase, attempt))

    async def round_failed(self, state: RoundSnapshot, attempt: int) -> None:
        self.log.append(("failed", state.kind, state.number, attempt, state.reason))

    async def round_succeeded(self, state: RoundSnapshot) -> None:
        self.log.append(("succeeded", state.kind, state.number))

    async def evaluation_attached(self, number: int, evaluation: Mapping[str, float]) -> None:
        self.evaluations[number] = dict(evaluation)

    async def training_progress(self, view: AggregatorView, epsilon: float | None) -> None:
        self.progress.append((view.model_version, epsilon))

    async def training_finished(self, finish: core.Finish, view: AggregatorView) -> None:
        self.finished = finish
        self.log.append(("finished", finish.reason))

    async def training_failed(self, reason: str) -> None:
        self.failed = reason
        self.log.append(("training failed", reason))

    async def round_aborted(self, state: RoundSnapshot) -> None:
        self.log.append(("aborted", state.kind, state.number))

    async def training_suspended(self, view: AggregatorView) -> None:
        self.log.append(("suspended", view.model_version))
