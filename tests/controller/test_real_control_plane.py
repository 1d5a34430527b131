"""What only a real control plane can show: the charts installed, upgraded and removed by Helm;
the operator held to the charts' RBAC; GPU client pods placed by the real scheduler; defaults
the API server applies from the CRD schema. Skipped without KUBEBUILDER_ASSETS."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.controller.cluster import Cluster, install_sites, site, start_operator, training_manifest, wait_for
from tests.dataplane.harness import free_port
from tests.kube.fixtures import start_kubelet
from tests.kube.real_lane import GPU, HUB_CHART, HUB_NAMESPACE, HUB_RELEASE, SITE_CHART, RealLane

UPGRADED_IMAGE = "registry.example.com/fedfleet:0.1.0-upgraded"
SITES = ["site-a", "site-b", "site-c"]


class Running:
    """A kubelet and an operator process for one test, stopped at its end."""

    def __init__(self, kubeconfig: Path, root: Path, **settings: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / "operator.log"
        self.kubelet = start_kubelet(kubeconfig, root / "kubelet")
        try:
            self.operator = start_operator(kubeconfig, self.log, **settings)
        except BaseException:
            self.kubelet.stop()
            raise

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        self.operator.terminate()
        try:
            self.operator.wait(15)
        except subprocess.TimeoutExpired:
            self.operator.kill()
            self.operator.wait()
        self.kubelet.stop()


@pytest.fixture
def running(real_kubeconfig: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start(**settings: str) -> Running:
        handle = Running(real_kubeconfig, tmp_path / f"run-{len(started)}", **settings)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


def phase(cluster: Cluster, name: str) -> str:
    return str(
        ((cluster.get("FederatedTraining", "default", name) or {}).get("status") or {}).get("phase", "")
    )


def deployment_env(lane: RealLane) -> dict[str, str]:
    container = lane.hub_deployment()["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_helm_installs_upgrades_and_uninstalls_both_charts_and_the_operator_works_after_the_upgrade(
    real_lane: RealLane, real_kubeconfig: Path, running: Any
) -> None:
    cluster = Cluster(real_kubeconfig)
    install_sites(real_kubeconfig, SITES)  # helm install of fedfleet-site, one namespace each
    assert cluster.get("FederationSite", "site-a", "site-a")["spec"]["capacity"] == 2
    plane = real_lane.plane
    plane.helm(
        "upgrade", "site-a", str(SITE_CHART), "-n", "site-a", "--reuse-values", "--set", "site.capacity=3"
    )
    assert cluster.get("FederationSite", "site-a", "site-a")["spec"]["capacity"] == 3
    plane.helm(
        "upgrade", HUB_RELEASE, str(HUB_CHART), "-n", HUB_NAMESPACE, "--reuse-values",
        "--set", f"aggregator.image={UPGRADED_IMAGE}",
    )  # fmt: skip
    env = deployment_env(real_lane)
    assert env["FEDFLEET_IMAGE"] == UPGRADED_IMAGE

    # the operator as the upgraded Deployment runs it: its image setting reaches a training that
    # sets client.resources but no image (a CRD default would have won before: issue 11)
    run = running(FEDFLEET_IMAGE=env["FEDFLEET_IMAGE"])
    manifest = training_manifest("upgraded", free_port(), SITES, rounds=1, minClients=3)
    manifest["spec"]["client"] = {"resources": {"requests": {"cpu": "100m"}}}
    stored = cluster.custom.create_namespaced_custom_object(
        "fedfleet.io", "v1alpha1", "default", "federatedtrainings", manifest
    )
    assert "image" not in stored["spec"]["client"], "the API server defaulted the image from the CRD"
    wait_for(lambda: phase(cluster, "upgraded") in ("Succeeded", "Failed"), 240, "upgraded finished")
    assert phase(cluster, "upgraded") == "Succeeded", run.log.read_text()[-3000:]
    images = {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in cluster.items("Pod", selector="fedfleet.io/training=upgraded")
    }
    assert images and set(images.values()) == {UPGRADED_IMAGE}, images
    run.stop()

    # uninstall: the releases' objects go; the CRDs (Helm's crds/ folder) and the trainings stay
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    plane.helm("uninstall", "site-a", "-n", "site-a", "--wait")
    real_lane.sites.discard("site-a")
    assert cluster.get("FederationSite", "site-a", "site-a") is None
    assert "site-a-operator" not in {r.metadata.name for r in rbac.list_namespaced_role("site-a").items}
    plane.helm("uninstall", HUB_RELEASE, "-n", HUB_NAMESPACE, "--wait")
    try:
        with pytest.raises(ApiException) as gone:
            cluster.core.read_namespaced_service_account(HUB_RELEASE, HUB_NAMESPACE)
        assert gone.value.status == 404
        assert HUB_RELEASE not in {r.metadata.name for r in rbac.list_cluster_role().items}
        assert cluster.get("FederatedTraining", "default", "upgraded") is not None
    finally:
        real_lane.install_hub()  # the session's install, for the tests after this one
    assert deployment_env(real_lane)["FEDFLEET_IMAGE"] != UPGRADED_IMAGE


def test_a_verb_missing_from_the_charts_role_is_refused_and_the_training_says_which(
    real_kubeconfig: Path, running: Any
) -> None:
    cluster = Cluster(real_kubeconfig)
    install_sites(real_kubeconfig, SITES)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    # the hub chart's ClusterRole and each site chart's Role both grant pod creation in a site's
    # namespace (whole-cluster install): take it from both, for site-c
    role = rbac.read_namespaced_role("site-c-operator", "site-c")
    site_rule = next(r for r in role.rules if r.resources == ["pods"])
    cluster_role = rbac.read_cluster_role(HUB_RELEASE)
    hub_rule = next(r for r in cluster_role.rules if r.resources == ["pods"])
    assert "create" in site_rule.verbs and "create" in hub_rule.verbs
    site_granted, hub_granted = list(site_rule.verbs), list(hub_rule.verbs)
    site_rule.verbs = [v for v in site_granted if v != "create"]
    rbac.replace_namespaced_role("site-c-operator", "site-c", role)
    hub_rule.verbs = [v for v in hub_granted if v != "create"]
    # the other namespaces keep theirs through a Role of their own
    for namespace in ("default", "site-a", "site-b"):
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "pods-create"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "pods-create"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods-create"},
                "subjects": [{"kind": "ServiceAccount", "name": HUB_RELEASE, "namespace": HUB_NAMESPACE}],
            },
        )
    rbac.replace_cluster_role(HUB_RELEASE, cluster_role)

    run = running()
    try:
        cluster.apply(training_manifest("denied", free_port(), SITES, rounds=1, minClients=3))

        def refused_condition() -> dict[str, Any] | None:
            status = (cluster.get("FederatedTraining", "default", "denied") or {}).get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            return ready if ready and ready["reason"] == "Forbidden" else None

        # the user reads it on the training (kubectl describe): a condition and a Warning Event
        ready = wait_for(refused_condition, 120, "Ready=False (Forbidden) on the training")
        shown = ready["message"]
        assert ready["status"] == "False" and "403" in shown, ready
        assert 'cannot create resource "pods"' in shown, shown
        assert "system:serviceaccount:fedfleet:fedfleet" in shown and "site-c" in shown, shown
        status = cluster.get("FederatedTraining", "default", "denied")["status"]
        assert status["message"] == shown
        # the Event follows the status write that shows the condition
        wait_for(lambda: ("Forbidden", shown) in cluster.events("denied"), 30, "the Forbidden Event")
        # and the operator's log, with the call that failed
        failed = wait_for(
            lambda: next((e for e in run.log_lines() if e.get("event") == "reconcile.failed"), None),
            30,
            "the operator's refused call in its log",
        )
        assert "403" in failed.get("exception", ""), failed
        assert not cluster.items("Pod", selector="fedfleet.io/site=site-c")
    finally:
        # the charts' grants back: the same operator carries on and the training finishes
        role = rbac.read_namespaced_role("site-c-operator", "site-c")
        next(r for r in role.rules if r.resources == ["pods"]).verbs = site_granted
        rbac.replace_namespaced_role("site-c-operator", "site-c", role)
        cluster_role = rbac.read_cluster_role(HUB_RELEASE)
        next(r for r in cluster_role.rules if r.resources == ["pods"]).verbs = hub_granted
        rbac.replace_cluster_role(HUB_RELEASE, cluster_role)
        for namespace in ("default", "site-a", "site-b"):
            rbac.delete_namespaced_role_binding("pods-create", namespace)
            rbac.delete_namespaced_role("pods-create", namespace)
    wait_for(lambda: phase(cluster, "denied") in ("Succeeded", "Failed"), 240, "denied finished")
    # the refused creates were not counted as client starts: site-c's client ran, and Ready is back
    status = cluster.get("FederatedTraining", "default", "denied")["status"]
    assert phase(cluster, "denied") == "Succeeded", status
    assert status["controller"]["clientStarts"]["site-c-0"] == 1, status["controller"]["clientStarts"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready


def test_gpu_clients_land_on_a_node_with_a_free_gpu_or_stay_pending_with_the_schedulers_reason(
    real_kubeconfig: Path, running: Any
) -> None:
    cluster = Cluster(real_kubeconfig)
    toleration = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
    install_sites(real_kubeconfig, ["gpu-a", "gpu-b"], capacity=1, gpu={"count": 1}, tolerations=[toleration])
    running(FEDFLEET_SCHEDULING_TIMEOUT="1")
    cluster.apply(
        training_manifest(
            "gpus",
            free_port(),
            ["gpu-a", "gpu-b"],
            rounds=1,
            minClients=2,
            secureAggregation={"enabled": False},
        )
    )

    def placed() -> tuple[dict[str, Any], dict[str, Any]] | None:
        pods = cluster.items("Pod", selector="fedfleet.io/training=gpus,app.kubernetes.io/component=client")
        bound = [p for p in pods if p["spec"].get("nodeName")]
        waiting = [
            p
            for p in pods
            if any(
                c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]
        return (bound[0], waiting[0]) if len(bound) == 1 and len(waiting) == 1 else None

    bound, waiting = wait_for(placed, 120, "one GPU client bound, one unschedulable")
    assert bound["spec"]["nodeName"] == "node-gpu-0"
    assert bound["spec"]["containers"][0]["resources"]["limits"][GPU] == "1"
    reason = next(c["message"] for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled")
    assert f"Insufficient {GPU}" in reason

    def status_message() -> str:
        status = (cluster.get("FederatedTraining", "default", "gpus") or {}).get("status") or {}
        return str(status.get("message", ""))

    client_id = waiting["metadata"]["labels"]["fedfleet.io/client"]
    shown = wait_for(
        lambda: f"Insufficient {GPU}" in status_message() and status_message(), 60, "reason in status"
    )
    assert f"{client_id} at site" in shown and reason[:80] in shown


def test_a_namespaced_hub_watches_only_the_namespaces_it_is_given_and_cleans_up_there(
    real_lane: RealLane, real_kubeconfig: Path, running: Any
) -> None:
    cluster = Cluster(real_kubeconfig)
    install_sites(real_kubeconfig, ["site-a", "site-b", "site-x"])  # one namespace each
    watched = ["default", "site-a", "site-b"]
    real_lane.upgrade_hub("--set", f"namespaces={{{','.join(watched)}}}")
    try:
        cluster_role = client.RbacAuthorizationV1Api(cluster.api).read_cluster_role(HUB_RELEASE)
        assert {r for rule in cluster_role.rules for r in rule.resources} == {
            "customresourcedefinitions",
            "namespaces",
            "clusterpodtemplates",
            "selfsubjectaccessreviews",
        }  # nothing read or written across namespaces
        run = running()
        # a site in a watched namespace whose pods would run where the hub has no Role: not READY,
        # by the API server's own access review, before any training waits on pods never made
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "no-role"}})
        unreachable = site("unreachable")
        unreachable["spec"]["namespace"] = "no-role"
        cluster.apply(unreachable)

        def unreachable_status() -> dict[str, Any]:
            found = cluster.get("FederationSite", "default", "unreachable") or {}
            return dict(found.get("status") or {})

        shown = wait_for(lambda: "ready" in unreachable_status() and unreachable_status(), 60, "site checked")
        assert shown["ready"] is False
        assert shown["message"].startswith("the operator may not create pods in namespace no-role (RBAC)")
        cluster.apply(training_manifest("outside", free_port(), ["site-a", "site-x"], rounds=1))
        no_secagg = {"enabled": False}  # two clients: too few for SecAgg+
        cluster.apply(
            training_manifest(
                "teams", free_port(), ["site-a", "site-b"], rounds=1, secureAggregation=no_secagg
            )
        )

        def outside_refused() -> str:
            status = (cluster.get("FederatedTraining", "default", "outside") or {}).get("status") or {}
            return str(status.get("message", ""))

        # site-x's namespace is not watched: its FederationSite is not seen
        assert "no FederationSite named site-x" in wait_for(outside_refused, 120, "outside refused")
        with contextlib.suppress(TimeoutError):  # the assertion below says why
            wait_for(lambda: phase(cluster, "teams") in ("Succeeded", "Failed"), 240, "teams finished")
        shown = (cluster.get("FederatedTraining", "default", "teams") or {}).get("status")
        assert phase(cluster, "teams") == "Succeeded", (shown, run.log.read_text()[-3000:])
        ran = {
            (p["metadata"]["labels"]["app.kubernetes.io/component"], p["metadata"]["namespace"])
            for p in cluster.items("Pod", selector="fedfleet.io/training=teams")
        }
        # clients in the site namespaces; the aggregator, in the training's, may already be gone:
        # the operator removes it once the training has ended
        assert {ns for kind, ns in ran if kind == "client"} == {"site-a", "site-b"}
        assert {ns for kind, ns in ran if kind == "aggregator"} <= {"default"}
        # no refused call: kopf, given exact namespaces, lists no namespaces and watches no CRDs
        log = run.log.read_text(errors="replace")
        assert "Not enough permissions" not in log and "Forbidden" not in log, log[-3000:]

        cluster.delete("FederatedTraining", "default", "teams")
        selector = "fedfleet.io/training=teams"

        def left_over() -> list[str]:
            found = [
                f"{kind} {o['metadata']['namespace']}/{o['metadata']['name']}"
                for kind in ("Pod", "ConfigMap", "Secret", "Service")
                for o in cluster.items(kind, selector=selector)
            ]
            return [f for f in found if not f.endswith("/teams-lineage-key")]

        wait_for(lambda: not left_over(), 60, "every object of the deleted training gone")
        assert cluster.get("FederatedTraining", "default", "teams") is None
        assert not cluster.items("FederatedRound", "default")
    finally:
        real_lane.upgrade_hub("--reset-values")  # the session's whole-cluster install again
