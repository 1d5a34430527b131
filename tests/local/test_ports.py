"""The local runner's fleet and recorder for the round driver: which client processes count as
live or down, and what the run's result reads back from the recorder. No processes started."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedfleet.api.training import RetrySpec
from fedfleet.controller import core
from fedfleet.local.ports import MemoryRecorder, ProcessFleet
from fedfleet.local.processes import Supervised
from fedfleet.local.progress import RoundProgress
from fedfleet.rounds.ports import AggregatorView, RoundSnapshot

pytestmark = pytest.mark.unit


def client(name: str, exit_codes: list[int], given_up: bool = False) -> Supervised:
    proc = Supervised(name, [], Path("/nonexistent.log"), RetrySpec(), starts=len(exit_codes) or 1)
    proc.exit_codes, proc.given_up = exit_codes, given_up
    return proc


async def test_failed_processes_are_down_and_given_up_ones_are_not_live() -> None:
    fleet = ProcessFleet(
        [
            client("site-a-0", []),  # never failed (its process handle is not needed here)
            client("site-b-0", [1]),  # failed, awaiting its restart
            client("site-c-0", [1, 137], given_up=True),
        ]
    )
    state = await fleet.observe()
    assert state.live == {"site-a-0", "site-b-0"}
    assert dict(state.down) == {
        "site-b-0": "client process exited with code 1",
        "site-c-0": "client process exited with code 137",
    }


async def test_the_recorder_keeps_phases_the_final_evaluation_and_how_the_training_ended() -> None:
    recorder = MemoryRecorder(RoundProgress(enabled=False), total_rounds=2)
    assert await recorder.recorded(2, "evaluate") is None
    await recorder.round_started(core.StartRound(2, "evaluate", ("a",), 30, 1), attempt=1)
    assert await recorder.recorded(2, "evaluate") == ""
    final = RoundSnapshot(
        2, "evaluate", "Succeeded", participants=("a",), reported=("a",), metrics={"eval_accuracy": 0.9}
    )
    await recorder.round_changed(final, 1, None)
    await recorder.round_succeeded(final)
    assert await recorder.recorded(2, "evaluate") == "Succeeded"
    assert recorder.evaluation is not None and recorder.evaluation["metrics"] == {"eval_accuracy": 0.9}
    stop = core.Finish(core.BUDGET_EXHAUSTED, "stopped after 2 of 5 rounds")
    await recorder.training_finished(stop, AggregatorView(model_version=2))
    assert recorder.finish == stop and recorder.failure is None
