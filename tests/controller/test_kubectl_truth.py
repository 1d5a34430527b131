"""What kubectl shows is what happened: an invalid spec names its reason in `get ft`; a killed
client and a killed aggregator are Warning events on the training; a site whose data claim
does not exist is not READY; the held-out metric of the final model is a column."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fedfleet.controller.columns import printed

from tests.controller.cluster import install_sites, training_manifest, wait_for
from tests.controller.test_operator_e2e import SITES, SLOW_TASK, needs_test_kubelet
from tests.dataplane.harness import free_port
from tests.kube.fixtures import real_lane_of


def kubectl_get(kubeconfig: Path, *what: str, namespace: str = "default") -> list[dict[str, str]]:
    """`kubectl get` rows as {COLUMN: cell}, cut at the header's column starts (a cell may be empty)."""
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", *what, "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", out[0])] + [None]
    names = out[0].split()
    return [
        {name: line[a:b].strip() for name, a, b in zip(names, starts, starts[1:], strict=False)}
        for line in out[1:]
    ]


def warnings(fleet: Any, training: str) -> list[tuple[str, str]]:
    events = fleet.cluster.items("Event")
    return [
        (e["reason"], e.get("message", ""))
        for e in events
        if e.get("type") == "Warning" and (e.get("involvedObject") or {}).get("name") == training
    ]


def test_an_invalid_spec_shows_its_reason_in_get(fleet_factory: Any, kubeconfig: Path) -> None:
    fleet = fleet_factory()
    fleet.cluster.apply(training_manifest("toomany", free_port(), SITES, minClients=5))
    wait_for(lambda: (fleet.training("toomany").get("status") or {}).get("reason"), 60, "a reason")
    row = kubectl_get(kubeconfig, "ft", "toomany")[0]
    assert row["PHASE"] == "Pending" and row["REASON"] == "InvalidSpec", row
    assert fleet.training("toomany")["status"]["message"].startswith("spec.minClients: 5 is more than")


def test_a_site_whose_data_claim_does_not_exist_is_not_ready_until_it_does(
    fleet_factory: Any, kubeconfig: Path
) -> None:
    if real_lane_of(kubeconfig) is not None:
        pytest.skip("sites there are Helm releases in their own namespaces; the claim logic is the same")
    fleet = fleet_factory(operator_env={"FEDFLEET_SITE_CHECK_SECONDS": "1"})

    def claim(name: str) -> dict[str, Any]:
        made = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}}
        made["spec"] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        return made

    fleet.cluster.core.create_namespaced_persistent_volume_claim("default", claim("scans"))
    install_sites(kubeconfig, ["site-claimed"], dataVolumeClaim="scans")
    install_sites(kubeconfig, ["site-unclaimed"], dataVolumeClaim="missing-scans")

    def ready(name: str) -> bool | None:
        found = fleet.cluster.get("FederationSite", "default", name) or {}
        return (found.get("status") or {}).get("ready")

    wait_for(lambda: ready("site-claimed") is True and ready("site-unclaimed") is False, 60, "site status")
    site: dict[str, Any] = fleet.cluster.get("FederationSite", "default", "site-unclaimed") or {}
    assert site["status"]["message"].startswith(
        "data claim missing-scans does not exist in namespace default"
    )
    # no finalizer on a site: one uninstalled while the operator is down still goes away
    assert not site["metadata"].get("finalizers"), site["metadata"]
    rows = {r["NAME"]: r for r in kubectl_get(kubeconfig, "federationsites")}
    assert rows["site-unclaimed"]["READY"] == "false" and rows["site-claimed"]["READY"] == "true"

    # the claim made afterwards changes nothing on the site; the operator's re-check sees it
    fleet.cluster.core.create_namespaced_persistent_volume_claim("default", claim("missing-scans"))
    wait_for(lambda: ready("site-unclaimed") is True, 30, "site ready once its claim exists")


@needs_test_kubelet
def test_a_killed_client_and_a_killed_aggregator_are_warnings_on_the_training(
    fleet_factory: Any, kubeconfig: Path
) -> None:
    fleet = fleet_factory()
    manifest = training_manifest(
        "bumpy",
        free_port(),
        SITES,
        minClients=2,
        rounds=2,
        task=SLOW_TASK,
        secureAggregation={"enabled": False},
    )
    fleet.cluster.apply(manifest)

    def round_one_training() -> bool:
        found = fleet.cluster.get("FederatedRound", "default", "bumpy-r0001")
        return bool(found and (found.get("status") or {}).get("phase") == "Training")

    wait_for(round_one_training, 240, "round 1 training")
    processes = {p.name: p.process for p in fleet.kubelet.pods.values()}
    processes["bumpy-site-b-0"].send_signal(signal.SIGKILL)
    wait_for(lambda: "ClientFailed" in {r for r, _ in warnings(fleet, "bumpy")}, 60, "client warning")
    processes["bumpy-aggregator"].send_signal(signal.SIGKILL)
    done = fleet.wait_phase("bumpy", "Succeeded")

    seen = warnings(fleet, "bumpy")
    failed = [m for r, m in seen if r == "ClientFailed"]
    assert failed and failed[0].startswith("client site-b-0 failed with exit code"), seen
    restarted = [m for r, m in seen if r == "AggregatorRestarted"]
    assert len(restarted) == 1 and restarted[0].startswith("aggregator restarted"), seen
    assert done["status"]["aggregatorRestarts"] == 1

    row = kubectl_get(kubeconfig, "ft", "bumpy")[0]
    accuracy = done["status"]["metrics"]["eval_accuracy"]  # the final model's, as the local run reports
    assert row["HELD-OUT"] == f"accuracy={accuracy:.4g}" and row["REASON"] == "Succeeded", row


def test_columns_show_epsilon_rounded_and_the_reason_a_training_stopped() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "PrivacyBudgetExhausted"}
    progressing = {"type": "Progressing", "status": "False", "reason": "PrivacyBudgetExhausted"}
    status = {"epsilon": 2.3456789123, "metrics": {"eval_loss": 1.234567}, "conditions": [ready, progressing]}
    assert printed(status) == {
        "reason": "PrivacyBudgetExhausted",
        "heldOut": "loss=1.235",
        "epsilonRounded": 2.35,
    }
    failed = {"type": "Failed", "status": "True", "reason": "RoundsFailed"}
    assert printed({"conditions": [failed]}) == {"reason": "RoundsFailed"}
