"""What the round driver sees and touches, as domain types and three ports.

- `AggregatorPort`: the training's aggregator (its Control service): a bounded view of its
  status, start a round, drop a client from a round, finish. `RoundWatch` is the optional
  stream of a round's states, for callers that wake on round events instead of polling.
- `FleetPort`: the training's clients, wherever they run (pods in site namespaces, processes
  on this machine, pods at a remote site behind a gateway): which are live and which are down
  now. Making the clients exist (create, adopt, restart with backoff, give up) is the fleet's
  own job, done before the driver asks.
- `RoundRecorder`: where rounds and the training's progress are recorded (FederatedRounds,
  Events, metrics and status on a cluster; a progress bar and memory locally).

The views are plain frozen dataclasses, never wire messages: `fedfleet.convert` is the one
place that builds them from the protobuf contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fedfleet import vocabulary as vocab
from fedfleet.controller import core
from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy


@dataclass(frozen=True)
class ClientState:
    client_id: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class RoundSnapshot:
    """One round as the aggregator reports it."""

    number: int
    kind: vocab.RoundKind
    phase: vocab.RoundPhase
    reason: str = ""
    participants: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    clients: tuple[ClientState, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    model_digest: str = ""
    model_version: int = 0
    min_clients: int = 0
    started_unix: float = 0.0
    finished_unix: float = 0.0
    deadline_unix: float = 0.0
    bytes_received: int = 0
    privacy: RoundPrivacy | None = None  # the DP a released training round carried
    aborted: bool = False  # failed by AbortRound (a suspend): not a failure of the round

    @property
    def active(self) -> bool:
        return self.phase in vocab.ACTIVE_ROUND_PHASES

    @property
    def view(self) -> core.RoundView:
        return core.RoundView(self.number, self.kind, self.phase, self.reason)


@dataclass(frozen=True)
class SiteAccount:
    """One site's figures in the training, as the aggregator counted them (they only grow)."""

    site: str
    updates_accepted: int = 0
    updates_refused: int = 0
    bytes_received: int = 0  # update data read from its clients' uploads, accepted or refused
    bytes_sent: int = 0  # model download messages streamed to its clients
    client_seconds: float = 0.0  # its clients' time in rounds


@dataclass(frozen=True)
class AggregatorView:
    """What the driver needs of the aggregator's status; bounded whatever the rounds run."""

    model_version: int  # completed training rounds
    model_digest: str = ""
    ready_clients: tuple[str, ...] = ()  # clients waiting for a round now
    current: RoundSnapshot | None = None  # the open or last round
    recent: tuple[RoundSnapshot, ...] = ()  # the latest completed training rounds, oldest first
    # DP records of the released rounds, grouped by what the accountant charges, with counts:
    # one entry per distinct parameter set, however many rounds ran
    released: tuple[ReleasedRounds, ...] = ()
    finished: bool = False
    lineage_head: str = ""
    lineage_public_key: str = ""
    lineage_key_fingerprint: str = ""
    sites: tuple[SiteAccount, ...] = ()  # per site, by name


class AggregatorError(Exception):
    """A call to the aggregator did not succeed; the message says why, bounded."""


class AggregatorUnavailable(AggregatorError):
    """Not reachable now (starting, restarting, a call timed out): ask again later."""


class AggregatorRefused(AggregatorError):
    """It answered with a refusal (e.g. a round it cannot start)."""


class AggregatorPort(Protocol):
    async def status(self) -> AggregatorView: ...

    async def start_round(self, start: core.StartRound) -> RoundSnapshot:
        """Idempotent: starting a round that already ran returns its recorded state."""
        ...

    async def drop(self, number: int, client: str, reason: str) -> None:
        """Best effort: a client that is no participant or a round that is over is no error."""
        ...

    async def abort(self, number: int, reason: str) -> RoundSnapshot:
        """Fail the open round now, its uploads discarded (a suspend that does not wait)."""
        ...

    async def finish(self) -> None:
        """Every client's next join answers FINISHED."""
        ...


class RoundWatch(Protocol):
    def watch(self, number: int) -> AsyncIterator[RoundSnapshot]:
        """The round's states as they change, ending once it is Succeeded or Failed."""
        ...


class WatchableAggregator(AggregatorPort, RoundWatch, Protocol):
    """An aggregator port whose rounds can also be followed as they change."""


@dataclass(frozen=True)
class FleetState:
    """The clients as the fleet sees them now."""

    live: frozenset[str]  # running, or to be started again: not given up on, not refused
    down: Mapping[str, str] = field(default_factory=dict)  # not running now (failed) -> why


class FleetPort(Protocol):
    async def observe(self) -> FleetState: ...


class RoundRecorder(Protocol):
    async def recorded(self, number: int, kind: vocab.RoundKind) -> str | None:
        """The phase recorded for the round ("" before its first state), None with no record."""
        ...

    async def round_started(self, start: core.StartRound, attempt: int) -> None:
        """A round is about to start (or was found running without a record): record it with
        its attempt before the aggregator is asked, so no round runs unrecorded."""
        ...

    async def round_changed(self, state: RoundSnapshot, attempt: int, epsilon: float | None) -> None:
        """Record the round's state (only when it differs). Raises when it cannot: the step
        ends there, so an ending is never counted before it is on the record."""
        ...

    async def round_failed(self, state: RoundSnapshot, attempt: int) -> None: ...

    async def round_aborted(self, state: RoundSnapshot) -> None:
        """The round was aborted for a suspend: it runs again from its start on resume."""
        ...

    async def round_succeeded(self, state: RoundSnapshot) -> None: ...

    async def evaluation_attached(self, number: int, evaluation: Mapping[str, float]) -> None:
        """eval_* of training round `number`'s model arrived (measured one round later)."""
        ...

    async def training_progress(self, view: AggregatorView, epsilon: float | None) -> None:
        """Every step, before the driver acts: where the training stands."""
        ...

    async def training_finished(self, finish: core.Finish, view: AggregatorView) -> None: ...

    async def training_failed(self, reason: str) -> None: ...

    async def training_suspended(self, view: AggregatorView) -> None:
        """spec.suspend with no round in flight: nothing runs until it is false again."""
        ...
