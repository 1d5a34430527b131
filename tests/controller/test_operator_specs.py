"""Bad manifests: refused by the API server's schema, or accepted but marked InvalidSpec."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fedfleet.api.crds import BAKED_FIELDS, OPERATOR_FIELDS
from fedfleet.api.training import FederatedTrainingSpec
from kubernetes.client.exceptions import ApiException

from tests.controller.cluster import Cluster, install_sites, start_operator, training_manifest, wait_for


@pytest.mark.parametrize(
    ("spec", "status", "field"),
    [  # kube-apiserver's words (the real lane found the test server's differed)
        ({"rounds": 0}, 422, "spec.rounds: Invalid value: 0"),
        (
            {"strategy": {"name": "FedMagic"}},
            422,
            'spec.strategy.name: Unsupported value: "FedMagic": '
            'supported values: "FedAdam", "FedAvg", "FedProx"',
        ),
        (
            {"clientsPerSite": "two"},
            422,
            'spec.clientsPerSite: Invalid value: "string": '
            "spec.clientsPerSite in body must be of type integer",
        ),
        # refused under kubectl's fieldValidation=Strict; without it the API server prunes it
        ({"roundTimeoutSecs": 5}, 400, 'strict decoding error: unknown field "spec.roundTimeoutSecs"'),
    ],
)
def test_the_api_server_refuses_a_bad_manifest_naming_the_field(
    kubeconfig: Path, spec: dict[str, Any], status: int, field: str
) -> None:
    with pytest.raises(ApiException) as refused:
        Cluster(kubeconfig).apply(training_manifest("bad", 5000, ["site-a"], **spec))
    assert refused.value.status == status
    assert field in json.loads(refused.value.body)["message"]


def test_kubectl_apply_shows_the_refusal(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: fedfleet.io/v1alpha1\nkind: FederatedTraining\nmetadata: {name: bad}\n"
        "spec: {task: {name: digits-mlp}, rounds: -1, sites: {names: [a]}}\n"
    )
    run = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "create", "--validate=false", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode != 0 and "spec.rounds: Invalid value: -1" in run.stderr


def test_a_semantically_invalid_spec_gets_invalidspec_and_nothing_is_scheduled(
    kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = Cluster(kubeconfig)
    install_sites(kubeconfig, ["site-a", "site-b"])
    cluster.apply(
        training_manifest(
            "greedy", 5000, ["site-a", "site-b"], minClients=5, secureAggregation={"enabled": False}
        )
    )
    cluster.apply(training_manifest("lost", 5001, ["site-a", "site-x"]))
    cluster.apply(
        training_manifest(
            "unissued",
            5002,
            ["site-a", "site-b"],
            secureAggregation={"enabled": False},
            tls={"issuerSecret": "org-ca"},
        )
    )
    cluster.apply(
        training_manifest(
            "overworked",
            5003,
            ["site-a", "site-b"],
            secureAggregation={"enabled": False},
            task={"name": "digits-mlp", "config": {"localEpochs": 5000}},
        )
    )
    operator = start_operator(kubeconfig, tmp_path / "operator.log")
    try:

        def ready_condition(name: str) -> dict[str, Any] | None:
            found = cluster.get("FederatedTraining", "default", name) or {}
            conditions = {c["type"]: c for c in (found.get("status") or {}).get("conditions", [])}
            return conditions.get("Ready")

        greedy = wait_for(lambda: ready_condition("greedy"), 60, "greedy condition")
        assert (greedy["status"], greedy["reason"]) == ("False", "InvalidSpec")
        assert greedy["message"] == "spec.minClients: 5 is more than the 2 clients the sites run"
        lost = wait_for(lambda: ready_condition("lost"), 60, "lost condition")
        assert (
            lost["reason"] == "InvalidSpec"
            and lost["message"] == "spec.sites.names: no FederationSite named site-x"
        )
        # after the task's own check, which runs in a child process (seconds): a wider wait
        unissued = wait_for(lambda: ready_condition("unissued"), 180, "unissued condition")
        assert (unissued["reason"], unissued["message"]) == (
            "InvalidSpec",
            "spec.tls.issuerSecret: no Secret org-ca in namespace default",
        )
        overworked = wait_for(lambda: ready_condition("overworked"), 180, "overworked condition")
        assert (overworked["reason"], overworked["message"]) == (  # the task's own config model
            "InvalidSpec",
            "spec.task.config.localEpochs: Input should be less than or equal to 1000 (got 5000)",
        )
        wait_for(
            lambda: ("InvalidSpec", greedy["message"]) in cluster.events("greedy"), 30, "InvalidSpec event"
        )
        invalid = "fedfleet.io/training in (greedy,lost,unissued,overworked)"
        assert not cluster.items("Pod", selector=invalid)
        assert not cluster.items("Secret", selector=invalid)
        assert not cluster.items("FederatedRound", "default")
    finally:
        operator.terminate()
        operator.wait(15)


def test_a_started_training_refuses_an_edit_of_a_field_its_pods_read_naming_it(kubeconfig: Path) -> None:
    """The CRD's CEL rules, evaluated by the API server (both lanes: the test server runs them
    with a CEL implementation, the real lane's kube-apiserver natively): from status.startTime
    on (the operator writes it before it makes any pod), fields baked into the pods are
    immutable, through a suspend too, and rounds may only grow; before, anything may change;
    once finished, nothing in the spec may."""
    cluster = Cluster(kubeconfig)
    cluster.apply(training_manifest("fixed", 5010, ["site-a"]))
    group, version, plural = "fedfleet.io", "v1alpha1", "federatedtrainings"

    def edit(spec: dict[str, Any]) -> None:
        cluster.custom.patch_namespaced_custom_object(
            group, version, "default", plural, "fixed", {"spec": spec}
        )

    def status(fields: dict[str, Any]) -> None:
        cluster.custom.patch_namespaced_custom_object_status(
            group, version, "default", plural, "fixed", {"status": fields}
        )

    edit({"task": {"name": "digits-mlp", "config": {"hidden": 16}}})  # not started: accepted
    status({"phase": "Pending", "startTime": "2026-12-03T15:00:00Z"})
    for spec, field in [
        ({"task": {"name": "digits-mlp", "config": {"hidden": 32}}}, "spec.task"),
        ({"clientsPerSite": 2}, "spec.clientsPerSite"),
        ({"privacy": {"enabled": True}}, "spec.privacy"),
        ({"updates": {"maxExamples": 5}}, "spec.updates"),
    ]:
        with pytest.raises(ApiException) as refused:
            edit(spec)
        assert refused.value.status == 422
        assert f"{field} is immutable once the training has started" in str(refused.value.body), (
            refused.value.body
        )
    with pytest.raises(ApiException, match=r"spec\.rounds may grow but not shrink"):
        edit({"rounds": 2})
    # the operator's own knobs, and suspending, apply from its next pass
    edit(
        {
            "rounds": 5,
            "minClients": 1,
            "retry": {"maxAttempts": 4},
            "suspend": True,
            "suspendPolicy": "AbortRound",
        }
    )
    status({"phase": "Suspended"})
    with pytest.raises(ApiException, match=r"spec\.model is immutable once the training has started"):
        edit({"model": {"seed": 7}})
    edit({"suspend": False})
    found = cluster.get("FederatedTraining", "default", "fixed")
    assert found is not None
    assert found["spec"]["rounds"] == 5 and found["spec"]["task"]["config"]["hidden"] == 16
    assert found["spec"]["suspendPolicy"] == "AbortRound"

    status({"phase": "Succeeded"})
    with pytest.raises(ApiException) as refused:
        edit({"rounds": 6})
    assert "spec is immutable once the training has finished" in str(refused.value.body), refused.value.body
    cluster.custom.patch_namespaced_custom_object(  # metadata stays the user's
        group, version, "default", plural, "fixed", {"metadata": {"labels": {"team": "a"}}}
    )


def test_every_spec_field_is_either_baked_into_the_pods_or_the_operators_own() -> None:
    """A new spec field must be classified: immutable once started (CEL rule) or applied by
    the operator from its next pass (and then frozen once finished)."""
    fields = {f.alias or name for name, f in FederatedTrainingSpec.model_fields.items()}
    assert fields == set(BAKED_FIELDS) | set(OPERATOR_FIELDS)
    assert not set(BAKED_FIELDS) & set(OPERATOR_FIELDS)
