"""The round driver's ports for `fedfleet local run`: the supervised client processes as the
fleet, and a recorder that keeps the rounds in memory and shows them as progress bars. The
aggregator port is the same gRPC one the operator uses (`rounds/control.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.controller import core
from fedfleet.convert import round_record
from fedfleet.local.processes import Supervised
from fedfleet.local.progress import RoundProgress
from fedfleet.logs import get_logger
from fedfleet.rounds.ports import AggregatorView, FleetState, RoundSnapshot

log = get_logger(component="local")


class ProcessFleet:
    """The client processes: live unless given up on; down while a failed one awaits its restart."""

    def __init__(self, clients: list[Supervised]) -> None:
        self.clients = clients

    async def observe(self) -> FleetState:
        live = frozenset(p.name for p in self.clients if not p.given_up)
        down = {
            p.name: f"client process exited with code {p.exit_codes[-1]}"
            for p in self.clients
            if p.process is None and p.exit_codes
        }
        return FleetState(live, down)


class MemoryRecorder:
    """Rounds in memory, shown on the terminal; what the run's result reads back."""

    def __init__(self, progress: RoundProgress, total_rounds: int) -> None:
        self.progress = progress
        self.total_rounds = total_rounds
        self.phases: dict[tuple[int, str], str] = {}  # (round, kind) -> phase recorded
        self.evaluation: dict[str, Any] | None = None  # the final evaluation round, as reported
        self.finish: core.Finish | None = None
        self.failure: str | None = None

    async def recorded(self, number: int, kind: vocab.RoundKind) -> str | None:
        return self.phases.get((number, kind))

    async def round_started(self, start: core.StartRound, attempt: int) -> None:
        self.phases[(start.number, start.kind)] = ""

    async def round_changed(self, state: RoundSnapshot, attempt: int, epsilon: float | None) -> None:
        self.phases[(state.number, state.kind)] = state.phase
        self.progress.update(state, self.total_rounds)

    async def round_failed(self, state: RoundSnapshot, attempt: int) -> None:
        log.warning("round.failed", round=state.number, reason=state.reason, attempt=attempt)

    async def round_succeeded(self, state: RoundSnapshot) -> None:
        if state.kind == vocab.EVALUATE:
            self.evaluation = round_record(state)

    async def evaluation_attached(self, number: int, evaluation: Mapping[str, float]) -> None:
        """Read back with the whole history at the end of the run."""

    async def training_progress(self, view: AggregatorView, epsilon: float | None) -> None:
        """The progress bars follow the rounds themselves."""

    async def training_finished(self, finish: core.Finish, view: AggregatorView) -> None:
        self.finish = finish
        if finish.reason:
            log.info("training.stopped", reason=finish.reason, message=finish.message)

    async def training_failed(self, reason: str) -> None:
        self.failure = reason

    async def round_aborted(self, state: RoundSnapshot) -> None:
        log.warning("round.aborted", round=state.number, reason=state.reason)

    async def training_suspended(self, view: AggregatorView) -> None:
        """Never reached: a local run refuses spec.suspend before it starts (runner.py)."""
