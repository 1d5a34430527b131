"""The operator end to end: CRs in through a real HTTP API, real aggregator and client processes
started by a test kubelet, rounds over real gRPC, state back where `kubectl get` shows it."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fedfleet.controller.resources import LINEAGE_KEY_FILE
from fedfleet.provenance.signing import fingerprint, load_public_key

from tests.controller.cluster import Cluster, install_sites, start_operator, training_manifest, wait_for
from tests.dataplane.harness import free_port
from tests.kube.fixtures import start_kubelet
from tests.kube.kubelet import Kubelet
from tests.privacy.library import DELTA, library_epsilon

SITES = ["site-a", "site-b", "site-c"]


REAL_CLUSTER = bool(os.environ.get("FEDFLEET_TEST_KUBECONFIG"))
needs_test_kubelet = pytest.mark.skipif(
    REAL_CLUSTER, reason="injects pod failures and restarts the operator process: test API server only"
)


class Fleet:
    """A cluster under test: API, kubelet and operator process. On a real cluster
    (FEDFLEET_TEST_KUBECONFIG) its kubelets run the pods and the Helm-installed operator acts."""

    def __init__(
        self, kubeconfig: Path, root: Path, operator_env: dict[str, str] | None = None, **kubelet_options: Any
    ) -> None:
        self.root = root
        self.operator_env = operator_env or {}
        self.cluster = Cluster(kubeconfig)
        self.operator_log = root / "operator.log"
        self.kubelet: Kubelet | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        if not REAL_CLUSTER:
            self.kubelet = start_kubelet(kubeconfig, root / "kubelet", **kubelet_options)
            self.operator = start_operator(kubeconfig, self.operator_log, **self.operator_env)

    def restart_operator(self) -> None:
        assert self.operator is not None
        self.operator.send_signal(signal.SIGKILL)
        self.operator.wait()
        self.operator = start_operator(self.cluster.kubeconfig, self.operator_log, **self.operator_env)

    def training(self, name: str) -> dict[str, Any]:
        found = self.cluster.get("FederatedTraining", "default", name)
        assert found is not None
        return found

    def phase(self, name: str) -> str:
        return str((self.training(name).get("status") or {}).get("phase", ""))

    def wait_phase(self, name: str, phase: str, timeout: float = 240) -> dict[str, Any]:
        wait_for(
            lambda: self.phase(name) in (phase, "Succeeded", "Failed"),
            timeout,
            f"{name} {phase}",
        )
        assert self.phase(name) == phase, (
            self.training(name).get("status"),
            self.operator_log.read_text()[-3000:] if self.operator_log.exists() else "",
        )
        return self.training(name)

    def close(self) -> None:
        if self.operator is not None:
            self.operator.terminate()
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                self.operator.kill()
        if self.kubelet is not None:
            self.kubelet.stop()


@pytest.fixture
def fleet_factory(kubeconfig: Path, tmp_path: Path) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def make(**options: Any) -> Fleet:
        fleet = Fleet(kubeconfig, tmp_path, **options)
        fleets.append(fleet)
        install_sites(kubeconfig, SITES)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


def scrape(port: int) -> str | None:
    """The aggregator's Prometheus metrics, once it serves them."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as scraped:
            return str(scraped.read().decode())
    except OSError:
        return None


def fail_first_starts(client: str, failures: int) -> Any:
    """Kubelet policy: the first `failures` starts of one client's pod exit with code 3."""

    def decide(pod: dict[str, Any]) -> int | None:
        meta = pod["metadata"]
        attempt = int(meta.get("annotations", {}).get("fedfleet.io/attempt", "1"))
        if meta.get("labels", {}).get("fedfleet.io/client") == client and attempt <= failures:
            return 3
        return None

    return decide


def test_a_training_runs_to_success_with_a_client_retried_and_kubectl_shows_it(
    fleet_factory: Any, kubeconfig: Path
) -> None:
    fleet = fleet_factory(fail=fail_first_starts("site-b-0", 2))
    manifest = training_manifest("digits", free_port(), SITES, minClients=3)
    fleet.cluster.apply(manifest)
    if not REAL_CLUSTER:  # the test kubelet's pods listen on the test's loopback
        port = manifest["spec"]["aggregator"]["metricsPort"]
        assert "fedfleet_aggregator_auth_refusals_total" in wait_for(lambda: scrape(port), 120, "metrics")
    done = fleet.wait_phase("digits", "Succeeded")

    status = done["status"]
    assert status["completedRounds"] == 3 and status["roundProgress"] == "3/3"
    if not REAL_CLUSTER:  # pod failures are injected by the test kubelet only
        assert status["controller"]["clientStarts"] == {"site-a-0": 1, "site-b-0": 3, "site-c-0": 1}
    assert status["modelDigest"].startswith("sha256:") and status["lastLoss"] > 0
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Succeeded" and ready["observedGeneration"] == 1
    rounds = {r["metadata"]["name"]: r for r in fleet.cluster.items("FederatedRound", "default")}
    assert sorted(rounds) == ["digits-eval", "digits-r0001", "digits-r0002", "digits-r0003"]
    for name in ("digits-r0001", "digits-r0002", "digits-r0003"):
        round_status = rounds[name]["status"]
        assert round_status["phase"] == "Succeeded" and round_status["reported"] == 3, round_status
        assert round_status["aggregateDigest"].startswith("sha256:")
    assert rounds["digits-eval"]["status"]["metrics"]["eval_accuracy"] > 0.3

    events = fleet.cluster.events("digits")
    restarts = [m for r, m in events if r == "ClientRestarted"]
    if not REAL_CLUSTER:
        assert restarts == [
            "client site-b-0 started again (attempt 2 of 3)",
            "client site-b-0 started again (attempt 3 of 3)",
        ]
    assert {"RoundStarted", "RoundSucceeded", "TrainingSucceeded"} <= {r for r, _ in events}
    # the training is over: its aggregator pod goes (its state would stay on a state volume)
    wait_for(
        lambda: not fleet.cluster.items("Pod", selector="app.kubernetes.io/component=aggregator"),
        60,
        "the aggregator pod removed",
    )

    # every hop was mTLS with the identities the operator issued: one Secret per pod, mounted
    secrets = {
        s["metadata"]["name"]: s
        for s in fleet.cluster.items("Secret", selector="fedfleet.io/training=digits")
    }
    assert sorted(secrets) == sorted(
        ["digits-ca", "digits-aggregator-tls", "digits-lineage-key"] + [f"digits-{s}-0-tls" for s in SITES]
    )
    assert all(secrets[f"digits-{s}-0-tls"]["type"] == "kubernetes.io/tls" for s in SITES)
    if fleet.kubelet is not None:
        aggregator_log = fleet.kubelet.logs("digits-aggregator")
        assert '"mtls": true' in aggregator_log and "transport.plaintext" not in aggregator_log
        assert '"auth.refused"' not in aggregator_log
        assert "transport.plaintext" not in fleet.kubelet.logs("digits-site-a-0")

    shown = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "ft,fr", "-n", "default"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    lines = [line.split() for line in shown.splitlines() if line.strip()]
    training_row = next(line for line in lines if line[0].endswith("/digits"))
    assert training_row[1:4] == ["Succeeded", "3/3", "0/3"] or training_row[1:3] == ["Succeeded", "3/3"]
    round_row = next(line for line in lines if line[0].endswith("/digits-r0002"))
    assert round_row[1:7] == ["digits", "2", "Succeeded", "3", "3", "0"], shown
    wide = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "ft", "digits", "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert status["modelDigest"] in wide

    fleet.cluster.delete("FederatedTraining", "default", "digits")
    wait_for(
        lambda: fleet.cluster.get("FederatedTraining", "default", "digits") is None, 60, "training deleted"
    )
    wait_for(
        lambda: not fleet.cluster.items("Pod", selector="fedfleet.io/training=digits"), 60, "pods deleted"
    )
    # the garbage collector of a real control plane removes owned objects in the background
    for kind, namespace, selector in (
        ("FederatedRound", "default", ""),
        ("ConfigMap", None, "fedfleet.io/training=digits"),
        ("Service", None, "fedfleet.io/training=digits"),
    ):
        wait_for(
            lambda k=kind, n=namespace, s=selector: not fleet.cluster.items(k, n, s), 30, f"{kind} deleted"
        )

    # the lineage key outlives the training: it verifies the models already released
    def only_the_lineage_key() -> list[dict[str, Any]] | None:  # the rest is garbage-collected
        found = fleet.cluster.items("Secret", selector="fedfleet.io/training=digits")
        return found if [s["metadata"]["name"] for s in found] == ["digits-lineage-key"] else None

    left = wait_for(only_the_lineage_key, 30, "only the lineage key left")
    assert [s["metadata"]["name"] for s in left] == ["digits-lineage-key"]
    kept = load_public_key(base64.b64decode(left[0]["data"][LINEAGE_KEY_FILE]).decode())
    assert fingerprint(kept) == status["lineageKeyFingerprint"]


SLOW_TASK = {"name": "digits-mlp", "config": {"hidden": 16, "localEpochs": 60}}


@needs_test_kubelet
def test_an_operator_killed_mid_round_resumes_without_duplicates(fleet_factory: Any, kube_api: Any) -> None:
    fleet = fleet_factory()
    privacy = {"enabled": True, "clipNorm": 5.0, "noiseMultiplier": 1.0, "delta": DELTA}
    fleet.cluster.apply(
        training_manifest("resume", free_port(), SITES, minClients=3, task=SLOW_TASK, privacy=privacy)
    )

    def round_two_training() -> bool:
        found = fleet.cluster.get("FederatedRound", "default", "resume-r0002")
        return bool(found and (found.get("status") or {}).get("phase") == "Training")

    wait_for(round_two_training, 240, "round 2 training")
    fleet.restart_operator()
    done = fleet.wait_phase("resume", "Succeeded")

    assert done["status"]["controller"]["clientStarts"] == {"site-a-0": 1, "site-b-0": 1, "site-c-0": 1}
    rounds = {r["metadata"]["name"]: r for r in fleet.cluster.items("FederatedRound", "default")}
    assert sorted(rounds) == ["resume-eval", "resume-r0001", "resume-r0002", "resume-r0003"]
    assert all(r["status"]["phase"] == "Succeeded" and r["spec"]["attempt"] == 1 for r in rounds.values())
    # every released round charged once, across the restart: epsilon is dp-accounting's for 3 rounds
    assert done["status"]["epsilon"] == pytest.approx(library_epsilon([(1.0, 1.0)] * 3), rel=1e-9)
    spent = [rounds[f"resume-r000{n}"]["status"]["epsilon"] for n in (1, 2, 3)]
    assert spent == pytest.approx([library_epsilon([(1.0, 1.0)] * n) for n in (1, 2, 3)], rel=1e-9)
    header, row = subprocess.run(
        ["kubectl", "--kubeconfig", str(fleet.cluster.kubeconfig), "get", "ft", "resume", "-n", "default"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()[:2]
    assert row[header.index("EPSILON") :].split()[0] == f"{done['status']['epsilon']:.3g}"  # rounded
    if kube_api.kubeconfig == fleet.cluster.kubeconfig:  # the test server records every request
        pod_creates = [c for c in kube_api.calls if c.verb == "create" and c.resource == "pods"]
        round_creates = [c for c in kube_api.calls if c.verb == "create" and c.resource == "federatedrounds"]
        assert len(pod_creates) >= 4 and len(round_creates) >= 4
        names = {
            p["metadata"]["name"] for p in fleet.cluster.items("Pod", selector="fedfleet.io/training=resume")
        }
        # no duplicate; the aggregator pod goes once the training ended
        assert names - {"resume-aggregator"} == {"resume-site-a-0", "resume-site-b-0", "resume-site-c-0"}


@needs_test_kubelet
def test_a_client_failing_beyond_max_attempts_leaves_the_round_to_min_clients(fleet_factory: Any) -> None:
    fleet = fleet_factory(fail=fail_first_starts("site-c-0", 99))
    retry = {"maxAttempts": 2, "backoffSeconds": 0.2, "maxRoundAttempts": 2}
    plain = {"enabled": False}  # two clients left: SecAgg+ needs three, and is never dropped silently
    fleet.cluster.apply(
        training_manifest(
            "fewer", free_port(), SITES, minClients=2, rounds=2, retry=retry, secureAggregation=plain
        )
    )
    fleet.cluster.apply(training_manifest("toofew", free_port(), SITES, minClients=3, rounds=2, retry=retry))

    done = fleet.wait_phase("fewer", "Succeeded")
    assert done["status"]["controller"]["clientStarts"]["site-c-0"] == 2
    for number in (1, 2):
        round_status = fleet.cluster.get("FederatedRound", "default", f"fewer-r{number:04d}")["status"]
        assert round_status["reported"] == 2 and round_status["expected"] == 2, round_status
    assert ("ClientGivenUp", "client site-c-0 failed 2 times (exit code 3); not restarted") in (
        fleet.cluster.events("fewer")
    )

    failed = fleet.wait_phase("toofew", "Failed")
    assert failed["status"]["message"] == "2 clients left, fewer than minClients 3"
    condition = {c["type"]: c for c in failed["status"]["conditions"]}["Failed"]
    assert condition["status"] == "True" and condition["message"] == "2 clients left, fewer than minClients 3"
    assert ("TrainingFailed", "2 clients left, fewer than minClients 3") in fleet.cluster.events("toofew")
