"""A progress bar per round while the federation runs (rich; silent when disabled)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from fedfleet import vocabulary as vocab
from fedfleet.rounds.ports import RoundSnapshot


class RoundProgress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bars: dict[tuple[int, str], TaskID] = {}
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )

    def __enter__(self) -> RoundProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, state: RoundSnapshot, total_rounds: int) -> None:
        key = (state.number, state.kind)
        label = f"round {state.number}/{total_rounds}" if state.kind == vocab.TRAIN else "final evaluation"
        phase = state.phase.lower() + (f": {state.reason}" if state.reason else "")
        if key not in self._bars:
            self._bars[key] = self._progress.add_task(label, total=len(state.participants), phase=phase)
        self._progress.update(self._bars[key], completed=len(state.reported), phase=phase)
