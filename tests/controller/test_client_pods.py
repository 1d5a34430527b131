"""Client-pod logic (controller/client_pods.py) against an in-memory pod writer and index:
which pods are created, adopted, restarted, given up on, refused or named unschedulable, which
clients the round driver sees as live or down, and that a pass with nothing to do writes
nothing. No processes, no sockets: milliseconds."""

from __future__ import annotations

from typing import Any

import pytest
from fedfleet.api.site import FederationSiteSpec
from fedfleet.controller import resources as res
from fedfleet.controller.client_pods import ClientPods
from fedfleet.controller.settings import OperatorSettings
from fedfleet.controller.status_writer import Pass

from tests.controller.fake_pods import MemoryPods
from tests.controller.memory import stamp
from tests.trainings import unit_training

pytestmark = pytest.mark.unit

REF = res.TrainingRef("t", "default", "uid-t")
SITES = [res.SiteRef(name, "default", FederationSiteSpec(capacity=2)) for name in ("a", "b")]
TRAINING = unit_training(
    {
        "rounds": 2,
        "sites": {"names": ["a", "b"]},
        "minClients": 1,
        "retry": {"maxAttempts": 2, "backoffSeconds": 1},
    }
)


class Fleet:
    def __init__(self, settings: OperatorSettings | None = None, store: MemoryPods | None = None) -> None:
        self.store = store or MemoryPods()
        self.events: list[tuple[str, str]] = []
        self.pods = ClientPods(self.store, self._event, settings or OperatorSettings())
        self.status: dict[str, Any] = {}
        self.down: dict[str, str] = {}

    def _event(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((reason, message))

    async def run(self, index: list[dict[str, Any]] | None = None, training: Any = TRAINING) -> set[str]:
        """One pass; `index` is what the watch has shown (default: the store as it is)."""
        body = {"metadata": {"name": "t", "namespace": "default", "generation": 1}, "status": self.status}
        step = Pass(body)
        seen = list(self.store.pods.values()) if index is None else index
        state = await self.pods.ensure(REF, training, SITES, seen, "agg:1", step)
        self.status = step.status.dump()
        self.down = dict(state.down)
        return set(state.live)

    def pod(self, client: str) -> dict[str, Any]:
        return self.store.pods[("default", f"t-{client}")]

    def end(self, client: str, code: int, seconds_ago: float = 60, message: str = "") -> None:
        terminated = {"exitCode": code, "finishedAt": stamp(seconds_ago), "message": message}
        self.pod(client)["status"] = {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": terminated}}],
        }


async def test_missing_pods_are_created_once_and_a_pass_with_nothing_to_do_makes_no_request() -> None:
    fleet = Fleet()
    assert await fleet.run() == {"a-0", "b-0"}
    assert fleet.store.calls == [("create", "t-a-0"), ("create", "t-b-0")]
    assert fleet.status["controller"]["clientStarts"] == {"a-0": 1, "b-0": 1}
    assert fleet.pod("a-0")["metadata"]["annotations"]["fedfleet.io/attempt"] == "1"
    await fleet.run(index=[])  # the watch has not shown the new pods yet: nothing created twice
    await fleet.run()
    assert fleet.store.verbs() == ["create", "create"]
    assert fleet.status["controller"]["clientStarts"] == {"a-0": 1, "b-0": 1}


async def test_a_restarted_operator_adopts_pods_and_their_attempts() -> None:
    fleet = Fleet()
    await fleet.run()
    fleet.pod("b-0")["metadata"]["annotations"]["fedfleet.io/attempt"] = "2"
    fleet.store.calls.clear()
    restarted = Fleet(store=fleet.store)  # a new operator: nothing remembered but the cluster
    assert await restarted.run() == {"a-0", "b-0"}
    assert restarted.status["controller"]["clientStarts"] == {"a-0": 1, "b-0": 2}
    assert fleet.store.calls == []


async def test_a_failed_client_is_down_deleted_after_backoff_and_started_again() -> None:
    fleet = Fleet()
    await fleet.run()
    fleet.end("a-0", code=3, seconds_ago=0)
    assert "a-0" in await fleet.run()  # within its backoff: live (it will run again), down now
    assert fleet.down == {"a-0": "client pod failed with exit code 3"}  # the driver drops it
    assert ("default", "t-a-0") in fleet.store.pods
    fleet.end("a-0", code=3, seconds_ago=60)
    failed = dict(fleet.pod("a-0"))
    await fleet.run()
    assert ("default", "t-a-0") not in fleet.store.pods
    await fleet.run(index=[failed, fleet.pod("b-0")])  # the watch still shows the deleted pod
    assert ("default", "t-a-0") not in fleet.store.pods and fleet.down == {}
    await fleet.run()
    assert fleet.pod("a-0")["metadata"]["annotations"]["fedfleet.io/attempt"] == "2"
    assert fleet.status["controller"]["clientStarts"] == {"a-0": 2, "b-0": 1}
    assert ("ClientRestarted", "client a-0 started again (attempt 2 of 2)") in fleet.events


async def test_a_client_out_of_attempts_is_given_up_once_and_not_waited_for() -> None:
    fleet = Fleet()
    await fleet.run()
    fleet.pod("b-0")["metadata"]["annotations"]["fedfleet.io/attempt"] = "2"
    fleet.end("b-0", code=1)
    assert await fleet.run() == {"a-0"}
    assert fleet.pod("b-0")["metadata"]["annotations"]["fedfleet.io/given-up"] == "true"
    assert fleet.down == {"b-0": "client pod failed with exit code 1"}
    assert await fleet.run() == {"a-0"}
    assert fleet.store.verbs().count("given up") == 1
    assert [r for r, _ in fleet.events] == ["ClientGivenUp"]


async def test_a_refusing_client_keeps_its_own_reason_and_is_never_restarted() -> None:
    fleet = Fleet()
    await fleet.run()
    fleet.end("a-0", code=78, message="spec.task.config.localEpochs: 500 is above the task's limit 100")
    assert await fleet.run() == {"b-0"}
    assert fleet.status["refusedClients"] == {
        "a-0": "spec.task.config.localEpochs: 500 is above the task's limit 100"
    }
    await fleet.run()
    assert ("default", "t-a-0") in fleet.store.pods and "delete" not in fleet.store.verbs()
    assert fleet.events == [
        ("ClientRefused", "client a-0: spec.task.config.localEpochs: 500 is above the task's limit 100")
    ]


async def test_a_pod_pending_past_the_scheduling_timeout_is_named() -> None:
    fleet = Fleet(OperatorSettings(scheduling_timeout_seconds=30))
    await fleet.run()
    fleet.pod("b-0")["metadata"]["creationTimestamp"] = stamp(31)
    assert await fleet.run() == {"a-0", "b-0"}
    assert fleet.status["message"] == "cannot schedule for 30s: b-0 at site b"


async def test_a_suspend_removes_the_running_pods_and_their_resume_is_not_a_restart() -> None:
    fleet = Fleet()
    await fleet.run()
    fleet.pod("b-0")["metadata"]["annotations"]["fedfleet.io/attempt"] = "2"
    fleet.end("b-0", code=1)  # out of attempts: given up, its pod kept as the record
    await fleet.run()
    fleet.store.calls.clear()
    suspended = TRAINING.model_copy(update={"spec": TRAINING.spec.model_copy(update={"suspend": True})})
    body = {"metadata": {"name": "t", "namespace": "default", "generation": 2}, "status": fleet.status}
    step = Pass(body)
    await fleet.pods.suspend(REF, list(fleet.store.pods.values()), step)
    fleet.status = step.status.dump()
    assert fleet.store.calls == [("delete", "t-a-0")] and list(fleet.store.pods) == [("default", "t-b-0")]
    assert fleet.status["controller"]["suspendedClients"] == ["a-0"]
    assert await fleet.run(training=suspended) == set()  # while suspended: not started again
    assert fleet.store.verbs() == ["delete"]
    assert await fleet.run() == {"a-0"}  # resumed: the same start, no restart announced
    assert fleet.pod("a-0")["metadata"]["annotations"]["fedfleet.io/attempt"] == "1"
    assert fleet.status["controller"]["clientStarts"] == {"a-0": 1, "b-0": 2}
    assert fleet.status["controller"]["suspendedClients"] == []
    assert [r for r, _ in fleet.events] == ["ClientGivenUp"]
