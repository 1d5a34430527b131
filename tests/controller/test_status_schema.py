"""Every status field the operator writes is declared in its CRD: an API server prunes (a real
one, silently) or refuses (the test server, strictly) what the schema does not declare.

The statuses below set every field of the typed models the operator writes with
(`fedfleet.api.status`), nested ones too; a field added to a model without a value here fails
`test_the_samples_set_every_field`, so the round trip keeps covering the whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fedfleet.api.status import (
    Condition,
    ControllerState,
    ReleaseStatus,
    RoundClient,
    RoundPrivacyStatus,
    RoundStatus,
    SiteRecord,
    SiteStatus,
    SiteTrainingAccount,
    StatusModel,
    TrainingStatus,
)
from pydantic import BaseModel

from tests.controller.cluster import Cluster, site, training_manifest
from tests.kube.fixtures import load_crds
from tests.kube.schema import crd_validator, field_errors, unknown_fields

STAMP = "2026-12-03T15:00:00Z"
CONDITION = Condition(
    type="Ready",
    status="True",
    reason="SpecValid",
    message="ok",
    last_transition_time=STAMP,
    observed_generation=2,
)
TRAINING = TrainingStatus(
    phase="Suspended",
    current_round=0,
    completed_rounds=2,
    round_progress="2/3",
    clients_ready="0/3",
    expected_clients=3,
    last_loss=0.25,
    epsilon=1.5,
    epsilon_rounded=1.5,
    held_out="eval_accuracy=0.9",
    reason="Suspended",
    aggregator_restarts=1,
    release=ReleaseStatus(
        phase="Succeeded",
        reference="registry.example/fleet/digits:v1",
        digest="sha256:" + "d" * 64,
        model_digest="sha256:" + "a" * 64,
        lineage_head="sha256:" + "b" * 64,
        attempts=1,
        message="released",
    ),
    metrics={"train_loss": 0.25, "eval_accuracy": 0.9},
    model_digest="sha256:" + "a" * 64,
    lineage_head="sha256:" + "b" * 64,
    lineage_public_key="-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n",
    lineage_key_fingerprint="sha256:" + "c" * 64,
    refused_clients={"site-c-0": "base model digest not allowed"},
    removed_sites=["site-d"],
    message="suspended after round 2",
    start_time=STAMP,
    observed_generation=2,
    conditions=[CONDITION],
    controller=ControllerState(
        client_starts={"site-a-0": 2},
        round_failures={"2": 1},
        last_failure="deadline passed",
        evaluated=True,
        waiting_since=1780000000.5,
        suspended_clients=["site-a-0"],
        sites=[SiteRecord(name="site-a", namespace="default"), SiteRecord(name="site-d", namespace="d")],
    ),
)
ROUND = RoundStatus(
    phase="Succeeded",
    expected=3,
    reported=2,
    reported_clients=["site-a-0", "site-b-0"],
    dropped_clients=["site-c-0"],
    dropped=1,
    retries=1,
    clients={"site-c-0": RoundClient(state="Dropped", reason="client pod failed with exit code 3")},
    reason="all participants accounted for",
    metrics={"train_loss": 0.3},
    aggregate_digest="sha256:" + "d" * 64,
    bytes_received=4096,
    epsilon=0.75,
    privacy=RoundPrivacyStatus(
        mode="central",
        clip_norm=1.0,
        noise_multiplier=1.1,
        effective_noise_multiplier=1.1,
        expected_clients=3,
        survivors=2,
        max_update_norm=0.9,
    ),
    start_time=STAMP,
    completion_time=STAMP,
    duration="1m05s",
    conditions=[CONDITION],
)
SITE = SiteStatus(
    ready=True,
    gpus=1,
    message="",
    conditions=[CONDITION],
    connected=True,
    last_heartbeat=STAMP,
    agent_version="0.1.0",
    clients_running=2,
    gpus_in_use=1,
    refused_work=0,
    enrolled=STAMP,
    trainings={
        "default/digits": SiteTrainingAccount(
            updates_accepted=3,
            updates_refused=1,
            bytes_received=4096,
            bytes_sent=8192,
            client_seconds=12.5,
            updated=STAMP,
        )
    },
    updates_accepted=3,
    updates_refused=1,
    bytes_received=4096,
    bytes_sent=8192,
    client_seconds=12.5,
)
SAMPLES: dict[str, StatusModel] = {
    "FederatedTraining": TRAINING,
    "FederatedRound": ROUND,
    "FederationSite": SITE,
}


def unset_fields(model: BaseModel, where: str = "status") -> list[str]:
    missing = [f"{where}.{name}" for name in type(model).model_fields if name not in model.model_fields_set]
    for name in model.model_fields_set:
        value = getattr(model, name)
        values = (
            value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        )
        for item in values:
            if isinstance(item, BaseModel):
                missing += unset_fields(item, f"{where}.{name}")
    return missing


def test_the_samples_set_every_field() -> None:
    for kind, sample in SAMPLES.items():
        assert unset_fields(sample) == [], kind


@pytest.mark.unit
def test_every_status_field_is_in_the_generated_schema() -> None:
    crds = {crd["spec"]["names"]["kind"]: crd for crd in load_crds()}
    for kind, sample in SAMPLES.items():
        validator = crd_validator(crds[kind], "v1alpha1")
        obj: dict[str, Any] = {"apiVersion": "fedfleet.io/v1alpha1", "kind": kind, "metadata": {}}
        obj["spec"] = manifest(kind)["spec"]
        obj["status"] = sample.dump()
        assert unknown_fields(validator, obj) == [], kind
        assert field_errors(validator, obj) == [], kind


def manifest(kind: str) -> dict[str, Any]:
    if kind == "FederatedTraining":
        return training_manifest("typed", 5020, ["site-a"])
    if kind == "FederationSite":
        return site("typed-site")
    return {
        "apiVersion": "fedfleet.io/v1alpha1",
        "kind": "FederatedRound",
        "metadata": {"name": "typed-r0001", "namespace": "default"},
        "spec": {"training": "typed", "round": 1},
    }


def test_status_written_through_the_api_server_reads_back_whole(kubeconfig: Path) -> None:
    """On the real lane kube-apiserver prunes undeclared fields without a word: what was written
    must come back unchanged."""
    cluster = Cluster(kubeconfig)
    for kind, sample in SAMPLES.items():
        obj = manifest(kind)
        plural = {"FederatedTraining": "federatedtrainings", "FederatedRound": "federatedrounds"}.get(
            kind, "federationsites"
        )
        name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace", "default")
        cluster.custom.create_namespaced_custom_object("fedfleet.io", "v1alpha1", namespace, plural, obj)
        cluster.custom.patch_namespaced_custom_object_status(
            "fedfleet.io", "v1alpha1", namespace, plural, name, {"status": sample.dump()}
        )
        stored = cluster.get(kind, namespace, name)
        assert stored is not None
        assert stored["status"] == sample.dump(), kind
        assert type(sample).model_validate(stored["status"]) == sample
