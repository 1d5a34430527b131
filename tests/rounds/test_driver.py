"""The round driver against in-memory ports: what it starts, records, drops and remembers, step
by step, as the operator and `fedfleet local run` both rely on. No processes, no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fedfleet.api.status import ControllerState
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.controller import core
from fedfleet.controller.core import SCHEDULING_GRACE_SECONDS
from fedfleet.privacy.budget import epsilon_spent
from fedfleet.privacy.release import RoundPrivacy
from fedfleet.rounds.driver import Bookkeeping, RoundDriver, Step, Unreachable

from tests.rounds.fakes import Clock, FakeAggregator, FakeFleet, FakeRecorder, RecordRefused
from tests.trainings import unit_training

pytestmark = pytest.mark.unit

ALL = ("a-0", "b-0", "c-0")


def spec(**changes: Any) -> FederatedTrainingSpec:
    document = {
        "rounds": 2,
        "sites": {"names": ["a", "b", "c"]},
        "minClients": 2,
        "roundTimeoutSeconds": 30,
        "retry": {"maxRoundAttempts": 2},
    }
    return unit_training(document | changes).spec


class World:
    """A driver over fresh fakes, and the bookkeeping its caller keeps."""

    def __init__(self, training: FederatedTrainingSpec | None = None, ready: tuple[str, ...] = ALL) -> None:
        self.clock = Clock()
        self.spec = training or spec()
        self.aggregator = FakeAggregator(self.clock, ready=set(ready))
        self.fleet = FakeFleet(live=set(ALL))
        self.recorder = FakeRecorder()
        self.book = Bookkeeping()

    def driver(self) -> RoundDriver:
        return RoundDriver(self.spec, self.aggregator, self.fleet, self.recorder, clock=self.clock)

    async def step(self) -> core.Action:
        result = await self.driver().step(self.book)
        assert isinstance(result, Step), result
        return result.action

    def reload(self) -> None:
        """The caller restarted: its bookkeeping comes back from where it kept it (JSON status)."""
        record = ControllerState()
        self.book.store(record)
        self.book = Bookkeeping.of(ControllerState.model_validate(json.loads(json.dumps(record.dump()))))


async def test_a_training_runs_every_round_evaluates_the_final_model_and_finishes() -> None:
    world = World()
    assert await world.step() == core.StartRound(1, "train", ALL, 30, 2)
    assert await world.step() == core.WatchRound(1)
    world.aggregator.succeed()
    assert await world.step() == core.StartRound(2, "train", ALL, 30, 2)
    world.aggregator.succeed({"train_loss": 0.5})
    world.aggregator.evaluated(1, {"eval_accuracy": 0.7})  # round 1's model, measured in round 2
    assert await world.step() == core.StartRound(2, "evaluate", ALL, 30, 2)
    world.aggregator.evaluated(2, {"eval_accuracy": 0.8})  # round 2's model: the final evaluation
    world.aggregator.succeed({"eval_accuracy": 0.8})
    assert await world.step() == core.Finish()
    assert world.aggregator.finished and world.recorder.finished == core.Finish()
    assert world.book.evaluated
    assert world.recorder.evaluations == {1: {"eval_accuracy": 0.7}, 2: {"eval_accuracy": 0.8}}
    assert world.recorder.events("started", "succeeded") == [
        ("started", "train", 1, 1),
        ("succeeded", "train", 1),
        ("started", "train", 2, 1),
        ("succeeded", "train", 2),
        ("started", "evaluate", 2, 1),
        ("succeeded", "evaluate", 2),
    ]
    assert [s.number for s in world.aggregator.starts] == [1, 2, 2]


async def test_a_failed_round_is_counted_once_retried_then_fails_the_training() -> None:
    world = World()
    await world.step()
    world.aggregator.fail("1 of 2 updates arrived")
    world.recorder.refuse_writes = True  # the failure cannot be recorded yet: the step ends there
    with pytest.raises(RecordRefused):
        await world.step()
    assert world.book.round_failures == {} and len(world.aggregator.starts) == 1
    world.recorder.refuse_writes = False
    assert await world.step() == core.StartRound(1, "train", ALL, 30, 2)
    assert world.book.round_failures == {1: 1} and world.book.last_failure == "1 of 2 updates arrived"
    assert world.recorder.events("failed", "started")[-2:] == [
        ("failed", "train", 1, 1, "1 of 2 updates arrived"),
        ("started", "train", 1, 2),  # the retry is recorded as attempt 2
    ]
    world.aggregator.fail("deadline passed")
    failed = await world.step()
    assert failed == core.FailTraining("round 1 failed 2 times; last: deadline passed")
    assert world.recorder.failed == failed.reason and world.aggregator.finished
    assert world.book.round_failures == {1: 2}
    await world.step()  # the ending stays recorded: counted once however often it is seen
    assert world.book.round_failures == {1: 2}


async def test_a_participant_the_fleet_reports_down_is_dropped_once_and_the_round_goes_on() -> None:
    world = World()
    await world.step()
    world.aggregator.report("a-0")
    world.fleet.down = {"a-0": "exit 1", "b-0": "client process exited with code 9", "z-9": "exit 2"}
    assert await world.step() == core.WatchRound(1)
    assert world.aggregator.drops == [(1, "b-0", "client process exited with code 9")]  # a-0 had reported
    assert await world.step() == core.WatchRound(1)
    assert len(world.aggregator.drops) == 1, "already dropped: not asked again"
    world.aggregator.succeed()
    assert world.aggregator.current is not None and world.aggregator.current.reported == ("a-0", "c-0")


async def test_clients_given_up_on_are_not_waited_for_and_too_few_fail_the_training() -> None:
    world = World(ready=("a-0", "b-0"))
    world.fleet.live = {"a-0", "b-0"}  # c-0 given up
    assert await world.step() == core.StartRound(1, "train", ("a-0", "b-0"), 30, 2)
    world.aggregator.succeed()
    world.fleet.live = {"a-0"}
    assert await world.step() == core.FailTraining("1 clients left, fewer than minClients 2")


async def test_the_next_round_waits_for_every_client_then_starts_with_enough_after_the_grace_period() -> None:
    world = World(ready=("a-0", "b-0"))
    assert await world.step() == core.WaitForClients("2 of 3 clients ready")
    waiting_since = world.book.waiting_since
    assert waiting_since == world.clock.now
    world.clock.now += SCHEDULING_GRACE_SECONDS - 1
    assert isinstance(await world.step(), core.WaitForClients)
    assert world.book.waiting_since == waiting_since, "waiting started once"
    world.clock.now += 1
    assert await world.step() == core.StartRound(1, "train", ("a-0", "b-0"), 30, 2)
    assert world.book.waiting_since is None


async def test_the_privacy_budget_stops_training_evaluates_and_finishes_with_the_reason() -> None:
    dp = {"enabled": True, "clipNorm": 1.0, "noiseMultiplier": 1.2}
    record = RoundPrivacy("central", 1.0, 1.2, 3, 3)
    one, two = (epsilon_spent(spec(privacy=dp).privacy, (record,) * k, 3) for k in (1, 2))
    world = World(spec(rounds=10, privacy=dp | {"epsilonBudget": (one + two) / 2}))
    assert await world.step() == core.StartRound(1, "train", ALL, 30, 2)
    world.aggregator.succeed(privacy=record)
    assert await world.step() == core.StartRound(1, "evaluate", ALL, 30, 2), "round 2 would pass the budget"
    assert world.recorder.progress[-1] == (1, pytest.approx(one))
    world.aggregator.succeed()
    finish = await world.step()
    assert isinstance(finish, core.Finish) and finish.reason == core.BUDGET_EXHAUSTED
    assert finish.message.startswith("stopped after 1 of 10 rounds: epsilon")
    assert world.recorder.finished == finish


async def test_a_failed_final_evaluation_is_retried_then_the_trained_model_finishes() -> None:
    world = World(spec(rounds=1))
    await world.step()
    world.aggregator.succeed()
    assert await world.step() == core.StartRound(1, "evaluate", ALL, 30, 2)
    world.aggregator.fail("evaluation deadline passed")
    assert await world.step() == core.StartRound(1, "evaluate", ALL, 30, 2)
    world.aggregator.fail("evaluation deadline passed")
    assert await world.step() == core.Finish()
    assert not world.book.evaluated


async def test_after_a_restart_the_reloaded_bookkeeping_gives_the_same_decisions() -> None:
    world = World()
    await world.step()
    world.aggregator.fail("deadline passed")
    await world.step()  # counted, retried as attempt 2
    world.reload()
    world.recorder = FakeRecorder(phases=dict(world.recorder.phases))  # records outlive the caller
    world.aggregator.fail("deadline passed")
    assert await world.step() == core.FailTraining("round 1 failed 2 times; last: deadline passed")

    waiting = World(ready=("a-0", "b-0"))
    await waiting.step()
    waiting.clock.now += SCHEDULING_GRACE_SECONDS
    waiting.reload()
    assert await waiting.step() == core.StartRound(1, "train", ("a-0", "b-0"), 30, 2), (
        "the grace period ran on"
    )


async def test_a_round_found_running_without_a_record_is_adopted_not_started_again() -> None:
    world = World()
    await world.step()
    world.recorder = FakeRecorder()  # the record was lost (deleted, or never written before a crash)
    assert await world.step() == core.WatchRound(1)
    assert world.recorder.log[:2] == [("started", "train", 1, 1), ("changed", "train", 1, "Training", 1)]
    assert len(world.aggregator.starts) == 1


async def test_an_unreachable_aggregator_is_reported_and_nothing_is_recorded() -> None:
    world = World()
    world.aggregator.reachable = False
    result = await world.driver().step(world.book)
    assert isinstance(result, Unreachable) and "UNAVAILABLE" in str(result.error)
    assert world.recorder.log == [] and world.recorder.progress == []


async def test_a_suspend_finishes_or_aborts_the_round_in_flight_and_a_resume_runs_it_again() -> None:
    world = World()
    assert await world.step() == core.StartRound(1, "train", ALL, 30, 2)
    world.spec = world.spec.model_copy(update={"suspend": True})  # FinishRound: it closes first
    assert await world.step() == core.WatchRound(1)
    world.aggregator.succeed()
    assert await world.step() == core.Suspend()
    assert await world.step() == core.Suspend()  # nothing starts while suspended
    assert world.recorder.events("suspended") == [("suspended", 1)] * 2
    world.spec = world.spec.model_copy(update={"suspend": False, "suspend_policy": "AbortRound"})
    assert await world.step() == core.StartRound(2, "train", ALL, 30, 2)
    world.aggregator.report("a-0", "b-0")  # minClients reported: only an abort fails it now
    world.spec = world.spec.model_copy(update={"suspend": True})
    assert await world.step() == core.AbortRound(2)
    assert await world.step() == core.Suspend()
    assert world.recorder.events("aborted", "failed") == [("aborted", "train", 2)]
    assert world.book.round_failures == {} and world.aggregator.model_version == 1
    world.reload()
    world.spec = world.spec.model_copy(update={"suspend": False})
    assert await world.step() == core.StartRound(2, "train", ALL, 30, 2)  # the same round, attempt 1
    assert world.recorder.attempts[(2, "train")] == 1
