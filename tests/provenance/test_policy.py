"""Governance: a site trains only base models its policy allows; the pin is enforced where loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.api import parse_training
from fedfleet.api.site import FederationSiteSpec
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.controller import resources as res
from fedfleet.models import ModelSourceError, initial_weights
from fedfleet.provenance.policy import REFUSED_EXIT_CODE, PolicyRefusal, check_base_model
from fedfleet.provenance.verify import verify_state
from safetensors.numpy import save_file

from tests.controller.cluster import Cluster, install_sites, start_operator, training_manifest, wait_for
from tests.dataplane.harness import write_manifest
from tests.kube.fixtures import start_kubelet

PINNED = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64


def spec(**model: Any) -> FederatedTrainingSpec:
    return parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "t"},
            "spec": {"task": {"name": "digits-mlp"}, "rounds": 1, "sites": {"names": ["a"]}, "model": model},
        }
    ).spec


def test_the_policy_allows_only_listed_base_digests(tmp_path: Path) -> None:
    check_base_model(spec(digest=PINNED), [])  # no policy: anything
    check_base_model(spec(digest=PINNED), [OTHER, PINNED])
    with pytest.raises(PolicyRefusal, match=f"base model {PINNED} is not allowed"):
        check_base_model(spec(digest=PINNED), [OTHER])
    with pytest.raises(PolicyRefusal, match="pins no base model"):
        check_base_model(spec(), [OTHER])
    model = tmp_path / "base.safetensors"
    save_file({"w": np.ones(3, np.float32)}, str(model))
    check_base_model(spec(source=str(model)), [file_digest(model)])  # unpinned file: its own digest


def test_a_refusing_client_exits_before_joining_and_says_why(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "m.yaml", model={"digest": PINNED}, secureAggregation={"enabled": False}
    )
    reason_file = tmp_path / "termination-log"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "fedfleet", "client", "--manifest", str(manifest)),
            *("--aggregator", "127.0.0.1:1", "--site", "site-a", "--client-id", "site-a-0"),
            *("--allowed-base-digest", OTHER, "--log-format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FEDFLEET_TERMINATION_LOG": str(reason_file)},
    )
    assert run.returncode == REFUSED_EXIT_CODE
    line = json.loads(next(x for x in run.stderr.splitlines() if "client.policy_refused" in x))
    assert f"base model {PINNED} is not allowed" in line["reason"]
    assert reason_file.read_text() == line["reason"], "the reason Kubernetes puts in the pod's status"


def test_client_pods_carry_their_site_policy() -> None:
    ref = res.TrainingRef("t", "hub", "uid")
    strict = res.SiteRef(
        "a", "a", FederationSiteSpec.model_validate({"policy": {"allowedBaseDigests": [PINNED, OTHER]}})
    )
    pod = res.client_pod(ref, spec(digest=PINNED), strict, 0, 0, "agg:1", 1)
    args = pod["spec"]["containers"][0]["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--allowed-base-digest"] == [PINNED, OTHER]
    free = res.client_pod(ref, spec(), res.SiteRef("b", "b", FederationSiteSpec()), 0, 0, "agg:1", 1)
    assert "--allowed-base-digest" not in free["spec"]["containers"][0]["args"]


def test_the_aggregator_refuses_a_base_model_file_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    model = tmp_path / "base.safetensors"
    save_file({"w": np.ones(3, np.float32)}, str(model))
    with pytest.raises(
        ModelSourceError, match=f"spec.model.digest: {model} has digest .*, the manifest pins {PINNED}"
    ):
        initial_weights(spec(source=str(model), digest=PINNED))
    assert set(initial_weights(spec(source=str(model), digest=file_digest(model)))) == {"w"}


def test_a_pin_holds_for_an_initial_model_the_task_builds(tmp_path: Path) -> None:
    """No source: the pin is round 0's model.safetensors digest, checked before round 0 exists."""
    with pytest.raises(
        ModelSourceError, match=f"spec.model.digest: the initial model digits-mlp .* pins {PINNED}"
    ):
        initial_weights(spec(digest=PINNED))
    built = initial_weights(spec(seed=3))
    round_zero = tmp_path / "model.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in built.items()}, str(round_zero))  # as checkpoints do
    pinned = initial_weights(spec(seed=3, digest=file_digest(round_zero)))
    assert {k: v.tobytes() for k, v in pinned.items()} == {k: v.tobytes() for k, v in built.items()}
    with pytest.raises(ModelSourceError, match=r"from spec\.model\.seed 4 has digest"):
        initial_weights(spec(seed=4, digest=file_digest(round_zero)))  # another seed: another model


def test_the_operator_records_a_site_refusal_and_publishes_the_lineage(
    kubeconfig: Path, tmp_path: Path
) -> None:
    """site-c's policy refuses the (unpinned) model: its client is recorded as refused, never
    restarted, and the other two train; the training's status carries the lineage head."""
    cluster = Cluster(kubeconfig)
    install_sites(kubeconfig, ["site-a", "site-b"])
    install_sites(kubeconfig, ["site-c"], policy={"allowedBaseDigests": [PINNED]})
    cluster.apply(
        training_manifest(
            "gov", 5400, ["site-a", "site-b", "site-c"], rounds=1, secureAggregation={"enabled": False}
        )
    )
    kubelet = start_kubelet(kubeconfig, tmp_path / "kubelet")
    operator = start_operator(kubeconfig, tmp_path / "operator.log")
    try:

        def status() -> dict[str, Any]:
            return dict((cluster.get("FederatedTraining", "default", "gov") or {}).get("status") or {})

        wait_for(lambda: status().get("phase") in ("Succeeded", "Failed"), 240, "gov finished")
        final = status()
        assert final["phase"] == "Succeeded", (final, (tmp_path / "operator.log").read_text()[-3000:])
        assert list(final["refusedClients"]) == ["site-c-0"]
        # the client's own reason, from its termination message (what a kubelet copies to status)
        reason = final["refusedClients"]["site-c-0"]
        assert reason.startswith("site policy allowedBaseDigests: the training pins no base model"), reason
        assert final["controller"]["clientStarts"]["site-c-0"] == 1, "a refusal is not retried"
        assert any(reason == "ClientRefused" for reason, _ in cluster.events("gov"))
        state = tmp_path / "kubelet" / "pods" / "default" / "gov-aggregator" / "volumes" / "state"
        verified = verify_state(state)
        assert verified.ok, verified.problems
        assert final["lineageHead"] == verified.head
        assert verified.records[-1]["clients"] == ["site-a-0", "site-b-0"]
        if final.get("lineagePublicKey"):  # signed once the operator mounts the training's key
            assert final["lineageKeyFingerprint"] == verified.signers[-1]
    finally:
        operator.terminate()
        operator.wait(15)
        kubelet.stop()
