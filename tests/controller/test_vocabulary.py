"""The settings object, the round-phase translation and the status writer: one place each."""

from __future__ import annotations

import pytest
from fedfleet import convert
from fedfleet.controller import resources as res
from fedfleet.controller.settings import OperatorSettings, SettingsError
from fedfleet.controller.status_writer import Pass, StatusWriter
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
    body = {"metadata": {"name": "t", "namespace": "d"}, "status": {"phase": "Running", "completedRounds": 2}}
    assert not await writer.training(ref, Pass(body, {"phase": "Running", "completedRounds": 2}))
    assert await writer.training(ref, Pass(body, {"phase": "Running", "completedRounds": 3}))
    # the watch has not brought our own write back yet: not sent again
    assert not await writer.training(ref, Pass(body, {"phase": "Running", "completedRounds": 3}))
    assert [m for m, _ in kube.requests] == ["POST", "PATCH"]
    assert kube.objects[("federatedtrainings", "d", "t")]["status"]["completedRounds"] == 3
