"""Getting the model out of a cluster run: the training succeeds on the test cluster, the
operator removes the aggregator pod and releases the model from its state volume to a real OCI
registry started by the test; the training is deleted, and `fedfleet model pull --verify` then
gets the lineage head's model, signed by the released key. A tampered artifact is refused.
On the way, FederatedRounds are pruned to spec.history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedfleet.aggregator.checkpoints import file_digest

from tests.controller.cluster import training_manifest, wait_for
from tests.controller.test_operator_e2e import SITES
from tests.dataplane.harness import free_port
from tests.kube.fixtures import real_lane_of
from tests.release.registry import blob_path


def fedfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfleet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"FEDFLEET_LOG_FORMAT": "json"},
    )


def state_volume(claim: str, path: Path, namespace: str = "default") -> dict[str, Any]:
    """A PersistentVolume reserved for `claim` (claimRef), as a static provisioning admin makes one."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path)},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def test_a_finished_training_releases_its_model_that_outlives_it_verified(
    fleet_factory: Any, registry: str, tmp_path: Path, kubeconfig: Path
) -> None:
    fleet = fleet_factory()
    if real_lane_of(kubeconfig) is not None:
        # no provisioner there: the volume an administrator would have, made for the state claim
        # (its controller-manager's persistentvolume-binder binds them; the kubelet's claims are folders)
        fleet.cluster.core.create_persistent_volume(state_volume("shipped-state", tmp_path / "pv"))
    reference = f"{registry}/fleet/digits:v1"
    history = {"maxRounds": 2}  # kubectl's records of the rounds; the checkpoints keep all three
    manifest = training_manifest("shipped", free_port(), SITES, minClients=3, rounds=3, history=history)
    manifest["spec"]["aggregator"]["stateVolumeSize"] = "1Gi"
    manifest["spec"]["release"] = {"oci": {"reference": reference, "insecure": True}}
    fleet.cluster.apply(manifest)
    done = fleet.wait_phase("shipped", "Succeeded")["status"]

    def released() -> dict[str, Any] | None:
        found = (fleet.training("shipped").get("status") or {}).get("release") or {}
        return found if found.get("phase") in ("Succeeded", "Failed") else None

    release = wait_for(released, 120, "the model released")
    assert release["phase"] == "Succeeded", (release, fleet.kubelet and fleet.kubelet.logs("shipped-release"))
    assert release["modelDigest"] == done["modelDigest"] and release["lineageHead"] == done["lineageHead"]
    assert release["reference"] == reference and release["attempts"] == 1
    reasons = [r for r, _ in fleet.cluster.events("shipped")]
    assert "ModelReleased" in reasons and "ReleaseFailed" not in reasons
    rounds = sorted(r["metadata"]["name"] for r in fleet.cluster.items("FederatedRound", "default"))
    assert rounds == ["shipped-eval", "shipped-r0002", "shipped-r0003"]
    pods = {
        p["metadata"]["name"]: p for p in fleet.cluster.items("Pod", selector="fedfleet.io/training=shipped")
    }
    assert "shipped-aggregator" not in pods  # removed once the training ended; the release read its volume
    assert pods["shipped-release"]["status"]["phase"] == "Succeeded"

    fleet.cluster.delete("FederatedTraining", "default", "shipped")
    wait_for(lambda: fleet.cluster.get("FederatedTraining", "default", "shipped") is None, 60, "deleted")
    wait_for(lambda: not fleet.cluster.items("Pod", selector="fedfleet.io/training=shipped"), 60, "pods gone")
    claims = fleet.cluster.core.list_namespaced_persistent_volume_claim("default").items
    assert [c.metadata.name for c in claims if c.metadata.name.startswith("shipped")] == ["shipped-state"]
    secrets = [s["metadata"]["name"] for s in fleet.cluster.items("Secret", selector="fedfleet.io/retain")]
    assert "shipped-lineage-key" in secrets

    pulled = tmp_path / "pulled"
    pinned = done["lineagePublicKey"]  # what kubectl showed before the training went away
    got = fedfleet(
        "model", "pull", reference, "--out", str(pulled), "--verify", "--insecure", "--public-key", pinned
    )
    assert got.returncode == 0, got.stderr
    assert file_digest(pulled / "model.safetensors") == done["modelDigest"]
    assert f"verified {done['modelDigest']}: signed by {done['lineageKeyFingerprint']}" in got.stdout
    assert f"lineage head {done['lineageHead']} (3 rounds)" in got.stdout

    # the registry's copy of the model changed behind its back: refused, nothing left to load
    model = blob_path(tmp_path / "registry", done["modelDigest"])
    model.write_bytes(model.read_bytes()[:-4] + b"\0\0\0\0")
    tampered = tmp_path / "tampered"
    refused = fedfleet("model", "pull", reference, "--out", str(tampered), "--verify", "--insecure")
    assert refused.returncode == 1
    assert "model.safetensors does not match its digest in the manifest" in refused.stderr
    assert not (tampered / "model.safetensors").exists()
