"""spec.suspend on the operator end to end: the round in flight finishes (FinishRound) or is
aborted (AbortRound), the client pods go, the aggregator and its checkpoints stay, and
spec.suspend: false resumes exactly where it stopped. Nothing is killed, nothing lost: the final
model is bit for bit the one an uninterrupted training with the same seeds makes.

Plaintext rounds of two clients, so the aggregate is exact whatever order the uploads arrive
in (a + b == b + a in floating point; SecAgg+'s stochastic rounding would differ run to run).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.controller.cluster import training_manifest, wait_for
from tests.controller.test_operator_e2e import Fleet, fleet_factory  # noqa: F401  (the fixture)
from tests.dataplane.harness import free_port

TWO_SITES = ["site-a", "site-b"]
# long enough local training that a round is reliably still in flight when the test acts
SLOW = {"name": "digits-mlp", "config": {"hidden": 16, "localEpochs": 150}}
COMMON: dict[str, Any] = {
    "rounds": 3,
    "minClients": 2,
    "task": SLOW,
    "secureAggregation": {"enabled": False},
    "roundTimeoutSeconds": 300,
}


def set_spec(fleet: Fleet, name: str, **spec: Any) -> None:
    fleet.cluster.custom.patch_namespaced_custom_object(
        "fedfleet.io", "v1alpha1", "default", "federatedtrainings", name, {"spec": spec}
    )


def round_phase(fleet: Fleet, name: str) -> str:
    found = fleet.cluster.get("FederatedRound", "default", name) or {}
    return str((found.get("status") or {}).get("phase", ""))


def pods(fleet: Fleet, training: str, component: str) -> list[dict[str, Any]]:
    return fleet.cluster.items(
        "Pod", selector=f"fedfleet.io/training={training},app.kubernetes.io/component={component}"
    )


def suspended(fleet: Fleet, name: str) -> dict[str, Any]:
    training = fleet.wait_phase(name, "Suspended")
    wait_for(lambda: not pods(fleet, name, "client"), 60, f"{name}'s client pods removed")
    return training


@pytest.mark.timeout(900)  # two trainings of three slow rounds: minutes on a loaded machine
def test_a_suspended_training_resumes_where_it_stopped_and_makes_the_same_model(fleet_factory: Any) -> None:  # noqa: F811
    fleet = fleet_factory()
    fleet.cluster.apply(training_manifest("steady", free_port(), TWO_SITES, **COMMON))
    fleet.cluster.apply(training_manifest("paused", free_port(), TWO_SITES, **COMMON))
    wait_for(lambda: round_phase(fleet, "paused-r0001") == "Training", 240, "paused round 1 training")
    aggregator = pods(fleet, "paused", "aggregator")[0]["metadata"]["uid"]

    # FinishRound (the default): round 1 closes with its clients, then they go
    set_spec(fleet, "paused", suspend=True)
    first = suspended(fleet, "paused")["status"]
    done_before = first["completedRounds"]  # 1, unless round 2 had started before the operator saw it
    assert done_before in (1, 2) and round_phase(fleet, f"paused-r000{done_before}") == "Succeeded"
    assert fleet.cluster.get("FederatedRound", "default", f"paused-r000{done_before + 1}") is None
    conditions = {c["type"]: c for c in first["conditions"]}
    assert (conditions["Suspended"]["status"], conditions["Suspended"]["reason"]) == ("True", "Suspended")
    assert first["observedGeneration"] == fleet.training("paused")["metadata"]["generation"]
    assert sorted(first["controller"]["suspendedClients"]) == ["site-a-0", "site-b-0"]

    # AbortRound: round 2 fails at once, its uploads discarded, and is not counted as a failure
    set_spec(fleet, "paused", suspend=False, suspendPolicy="AbortRound")
    next_round = f"paused-r000{done_before + 1}"
    wait_for(lambda: round_phase(fleet, next_round) == "Training", 240, f"{next_round} training")
    set_spec(fleet, "paused", suspend=True)
    second = suspended(fleet, "paused")["status"]
    assert second["completedRounds"] == done_before
    aborted = fleet.cluster.get("FederatedRound", "default", next_round)
    assert aborted is not None and aborted["status"]["phase"] == "Failed"
    assert aborted["status"]["reason"] == "aborted: the training is suspended (AbortRound)"
    assert second["controller"].get("roundFailures", {}) == {}
    assert pods(fleet, "paused", "aggregator")[0]["metadata"]["uid"] == aggregator  # kept through both

    set_spec(fleet, "paused", suspend=False)
    done = fleet.wait_phase("paused", "Succeeded", timeout=600)["status"]
    steady = fleet.wait_phase("steady", "Succeeded", timeout=600)["status"]

    assert done["modelDigest"] == steady["modelDigest"]  # nothing lost, nothing trained twice
    assert done["completedRounds"] == 3 and done["controller"].get("roundFailures", {}) == {}
    assert not done.get("aggregatorRestarts")  # the same aggregator to the end (removed once it ended)
    # resumes are not restarts: no start counted, no restart announced
    assert done["controller"]["clientStarts"] == {"site-a-0": 1, "site-b-0": 1}
    reasons = [reason for reason, _ in fleet.cluster.events("paused")]
    assert "ClientRestarted" not in reasons and "RoundFailed" not in reasons
    assert reasons.count("TrainingSuspended") == 2 and reasons.count("TrainingResumed") == 2
    assert "RoundAborted" in reasons
    rounds = {r["metadata"]["name"]: r for r in fleet.cluster.items("FederatedRound", "default")}
    for number in (1, 2, 3):
        record = rounds[f"paused-r000{number}"]
        assert record["status"]["phase"] == "Succeeded" and record["spec"]["attempt"] == 1, record["status"]
