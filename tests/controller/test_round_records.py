"""The operator's round layer (controller/rounds.py: the driver with its Kubernetes recorder)
against the in-memory API store and the fake aggregator: each round becomes a FederatedRound
(replaced when retried), Events say what happened, the training's status says where it is and
keeps the driver's bookkeeping, and a pass with nothing new writes nothing. Milliseconds."""

from __future__ import annotations

from typing import Any

import pytest
from fedfleet.controller import resources as res
from fedfleet.controller.rounds import Rounds
from fedfleet.controller.status_writer import Pass, StatusWriter
from fedfleet.rounds.ports import FleetState

from tests.controller.memory import MemoryKube
from tests.rounds.fakes import Clock, FakeAggregator
from tests.trainings import unit_training

pytestmark = pytest.mark.unit

REF = res.TrainingRef("t", "default", "uid-t")
ALL = frozenset({"a-0", "b-0", "c-0"})
TRAINING = unit_training(
    {"rounds": 1, "sites": {"names": ["a", "b", "c"]}, "minClients": 2, "retry": {"maxRoundAttempts": 2}}
)


class Operator:
    def __init__(self) -> None:
        self.kube = MemoryKube()
        self.events: list[tuple[str, str]] = []
        self.rounds = Rounds(self.kube, StatusWriter(self.kube), self._event)
        self.aggregator = FakeAggregator(Clock(), ready=set(ALL))
        self.status: dict[str, Any] = {}

    def _event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((reason, message))

    async def run(self) -> Pass:
        """One pass; its status fragment is merged as the status writer would patch it."""
        step = Pass(
            {"metadata": {"name": "t", "namespace": "default", "generation": 1}, "status": self.status}
        )
        await self.rounds.drive(REF, TRAINING, self.aggregator, FleetState(ALL), step)
        self.status = step.status.dump()
        return step

    def round(self, name: str) -> dict[str, Any]:
        return self.kube.objects[("federatedrounds", "default", name)]


async def test_rounds_are_recorded_retried_and_finished_on_the_cluster() -> None:
    op = Operator()
    await op.run()
    first = op.round("t-r0001")
    assert first["spec"]["attempt"] == 1 and first["spec"]["participants"] == sorted(ALL)
    assert first["status"]["phase"] == "Training" and first["status"]["retries"] == 0
    assert op.status["phase"] == "Running" and op.status["currentRound"] == 1
    op.kube.requests.clear()
    await op.run()  # nothing changed: nothing written
    assert op.kube.requests == []

    op.aggregator.fail("deadline passed with 1 of 3 participants reported; minClients is 2")
    await op.run()
    book = op.status["controller"]
    assert book["roundFailures"] == {"1": 1} and book["lastFailure"].startswith("deadline")
    retried = op.round("t-r0001")
    assert retried["spec"]["attempt"] == 2 and retried["status"]["retries"] == 1
    assert retried["status"]["phase"] == "Training", "the retry's record replaced the failed one"

    op.aggregator.succeed({"train_loss": 0.25})
    await op.run()
    assert op.round("t-r0001")["status"]["phase"] == "Succeeded" and op.status["lastLoss"] == 0.25
    assert op.round("t-eval")["spec"]["kind"] == "evaluate"
    op.aggregator.evaluated(1, {"eval_accuracy": 0.9})
    op.aggregator.succeed({"eval_accuracy": 0.9})
    step = await op.run()
    assert step.done and op.status["phase"] == "Succeeded" and op.aggregator.finished
    assert op.round("t-r0001")["status"]["metrics"] == {"train_loss": 0.25, "eval_accuracy": 0.9}
    ready = next(c for c in op.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("True", "Succeeded", "1 rounds completed")
    assert [reason for reason, _ in op.events] == [
        "RoundStarted",
        "RoundFailed",
        "RoundStarted",
        "RoundSucceeded",
        "RoundStarted",
        "RoundSucceeded",
        "TrainingSucceeded",
    ]
    assert op.events[2] == ("RoundStarted", "train round 1 with 3 clients (attempt 2)")


async def test_an_unreachable_aggregator_is_waited_for_with_nothing_recorded() -> None:
    op = Operator()
    op.aggregator.reachable = False
    await op.run()
    assert op.status["phase"] == "Pending" and op.status["message"] == "waiting for the aggregator"
    assert op.kube.objects == {} and op.events == []
