"""Deleting a training removes everything the operator made for it, in every namespace, in
both lanes: what the training owns through the garbage collector (the test API server's, or
the real kube-controller-manager's), the rest (client pods, manifests and certificates in the
sites' namespaces, where owner references cannot reach) through the operator's finalizer. No
pod is orphaned; only the lineage key stays (it verifies the models already released). The
state claim, retained by default, goes too when `spec.retention.stateVolume` says Delete."""

from __future__ import annotations

from pathlib import Path

from tests.controller.cluster import Cluster, install_sites, start_operator, training_manifest, wait_for
from tests.dataplane.harness import free_port
from tests.kube.fixtures import start_kubelet

SITES = ["site-a", "site-b"]
KINDS = ("Pod", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim", "NetworkPolicy")


def made_for(cluster: Cluster, training: str) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every object labelled as the training's."""
    return {
        (kind, o["metadata"]["namespace"], o["metadata"]["name"])
        for kind in KINDS
        for o in cluster.items(kind, selector=f"fedfleet.io/training={training}")
    } | {
        ("FederatedRound", o["metadata"]["namespace"], o["metadata"]["name"])
        for o in cluster.items("FederatedRound", "default")
        if o["spec"]["training"] == training
    }


def test_deleting_a_training_leaves_nothing_it_made_but_its_lineage_key(
    kubeconfig: Path, tmp_path: Path
) -> None:
    install_sites(kubeconfig, SITES)
    cluster = Cluster(kubeconfig)
    kubelet = start_kubelet(kubeconfig, tmp_path / "kubelet", phase_only=True)  # pods run nothing
    operator = start_operator(kubeconfig, tmp_path / "operator.log")
    try:
        manifest = training_manifest(
            "doomed", free_port(), SITES, rounds=1, secureAggregation={"enabled": False}
        )
        manifest["spec"]["aggregator"] |= {"stateVolumeSize": "1Gi", "networkPolicy": True}
        manifest["spec"]["retention"] = {"stateVolume": "Delete"}  # kept unless the spec says so
        cluster.apply(manifest)
        site_namespaces = {s["metadata"]["namespace"] for s in cluster.items("FederationSite")}

        seen: list[set[tuple[str, str, str]]] = [set()]

        def everything_made() -> set[tuple[str, str, str]] | None:
            made = seen[0] = made_for(cluster, "doomed")
            kinds = {kind for kind, _, _ in made}
            clients = {n for k, _, n in made if k == "Pod" and n.startswith("doomed-site-")}
            return made if set(KINDS) <= kinds and len(clients) == len(SITES) else None

        try:
            made = wait_for(everything_made, 120, "the training's objects made")
        except TimeoutError:
            raise AssertionError(f"made so far: {sorted(seen[0])}") from None
        # the sites' namespaces hold what the finalizer must remove (one namespace each on the
        # real lane, `default` on the test server)
        assert {ns for kind, ns, _ in made if kind == "Pod"} >= site_namespaces
        assert {("PersistentVolumeClaim", "default", "doomed-state")} <= made

        cluster.delete("FederatedTraining", "default", "doomed")
        lineage_key = {("Secret", "default", "doomed-lineage-key")}
        wait_for(lambda: made_for(cluster, "doomed") == lineage_key, 90, "only the lineage key left")
        assert cluster.get("FederatedTraining", "default", "doomed") is None
        assert not [p for p in kubelet.pods.values() if p.namespace in site_namespaces | {"default"}]
    finally:
        operator.terminate()
        operator.wait(30)
        kubelet.stop()
