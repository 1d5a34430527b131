"""The settings object, the round-phase translation and the status writer: one place each."""

from __future__ import annotations

from typing import Any

import pytest
from fedfleet import convert
from fedfleet.api.status import TrainingStatus
from fedfleet.controller import resources as res
from fedfleet.controller.settings import OperatorSettings, SettingsError
from fedfleet.controller.status_writer import Pass, StatusWriter, merge_patch
from fedfleet.v1 import aggregator_pb2 as pb

from tests.controller.memory import MemoryKube

pytestmark = pytest.mark.unit


def test_settings_come_from_the_environment_once_and_bad_values_are_named() -> None:
    settings = OperatorSettings.from_env(
        {"FEDFLEET_AGGREGATOR_ADDRESS": "127.0.0.1:{port}", "FEDFLEET_RECONCILE_INTERVAL": "0.5"}
    )
    assert settings.address("t-aggregator", "ns", 7000) == "127.0.0.1:7000"
    assert settings.reconcile_interval_seconds == 0.5
    assert OperatorSettings.from_env({}).address("t-aggregator", "ns", 1) == "t-aggregator.ns.svc:1"
    with pytest.raises(SettingsError, match="FEDFLEET_SCHEDULING_TIMEOUT='soon': not a number"):
        OperatorSettings.from_env({"FEDFLEET_SCHEDULING_TIMEOUT": "soon"})
    with pytest.raises(SettingsError, match="must be a positive"):
        OperatorSettings.from_env({"FEDFLEET_RECONCILE_INTERVAL": "-1"})


def test_an_unset_round_phase_and_kind_read_as_pending_and_train_everywhere() -> None:
    assert convert.round_phase(pb.ROUND_PHASE_UNSPECIFIED) == "Pending"
    assert convert.round_kind(0) == "train"
    state = pb.RoundState(round=3, kind=pb.ROUND_KIND_EVALUATE, phase=pb.ROUND_PHASE_AGGREGATING)
    view = convert.round_view(state)
    assert (view.number, view.kind, view.phase) == (3, "evaluate", "Aggregating")
    assert convert.round_record(convert.round_snapshot(state))["phase"] == "Aggregating"
    assert [convert.round_phase(v) for v in pb.RoundPhase.values()] == [
        "Pending",
        "Pending",
        "Training",
        "Aggregating",
        "Succeeded",
        "Failed",
    ]


async def test_status_is_patched_only_when_it_differs() -> None:
    kube = MemoryKube()
    await kube.create(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "t", "namespace": "d"},
        }
    )
    writer = StatusWriter(kube)
    ref = res.TrainingRef("t", "d", "u")
    seen = TrainingStatus(phase="Running", completed_rounds=2)
    seen.controller.waiting_since = 5.0
    await kube.patch_status("FederatedTraining", "d", "t", seen.dump())
    kube.requests.clear()
    body = {"metadata": {"name": "t", "namespace": "d"}, "status": seen.dump()}

    def step(**changes: Any) -> Pass:
        made = Pass(body)
        for name, value in changes.items():
            setattr(made.status, name, value)
        return made

    assert not await writer.training(ref, step())
    later = step(completed_rounds=3)
    later.status.controller.waiting_since = None
    assert await writer.training(ref, later)
    # the watch has not brought our own write back yet: not sent again
    again = step(completed_rounds=3)
    again.status.controller.waiting_since = None
    assert not await writer.training(ref, again)
    assert [m for m, _ in kube.requests] == ["PATCH"]
    # the difference went out as a merge patch: the new count, and the cleared timer as a null
    assert kube.objects[("federatedtrainings", "d", "t")]["status"] == later.status.dump()
    assert "waitingSince" not in later.status.dump()["controller"]


def test_a_merge_patch_deletes_what_is_gone_but_not_keys_others_wrote() -> None:
    current = {"phase": "Running", "metrics": {"a": 1.0, "b": 2.0}, "kopf": {"x": 1}, "message": "m"}
    wanted = {"phase": "Running", "metrics": {"a": 1.5}}
    assert merge_patch(current, wanted, frozenset({"phase", "metrics", "message"})) == {
        "metrics": {"a": 1.5, "b": None},
        "message": None,
    }
    assert merge_patch(wanted, wanted) == {}
    assert merge_patch({}, {"refusedClients": {}}) == {"refusedClients": {}}


def test_a_status_the_operator_cannot_read_is_rewritten_not_a_stalled_pass() -> None:
    body = {"metadata": {"name": "t", "namespace": "d"}, "status": {"phase": "Exploded", "currentRound": 2}}
    step = Pass(body)
    assert step.current == TrainingStatus() and step.status == TrainingStatus()
    assert merge_patch(body["status"], step.status.dump())["phase"] == "Pending"
