"""Sites in their own clusters, end to end: a hub and three site clusters (each its own test API
server and test kubelet), the hub operator with only the hub's kubeconfig, and one site agent
per site dialling the hub's gateway. Real aggregator and client processes, real gRPC, mTLS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.charts.render import HUB, load_values, of_kind, render
from tests.charts.test_rbac import granted, permission
from tests.controller.cluster import training_manifest, wait_for
from tests.dataplane.harness import free_port
from tests.kube.fixtures import OPERATOR_TOKEN
from tests.sites.harness import AGENT_TOKEN, Federation, start_federation

SITES = ["site-a", "site-b", "site-c"]


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = start_federation(tmp_path)
    try:
        yield fed
    finally:
        fed.close()


def remote_training(name: str, sites: list[str], **spec: object) -> dict[str, object]:
    port = free_port()
    manifest = training_manifest(name, port, sites, **({"minClients": 3} | spec))
    manifest["spec"]["aggregator"]["externalAddress"] = f"127.0.0.1:{port}"  # type: ignore[index]
    return manifest


def training_status(federation: Federation, name: str) -> dict[str, Any]:
    return dict((federation.cluster.get("FederatedTraining", "default", name) or {}).get("status") or {})


def test_three_remote_sites_train_to_success_through_an_agent_kill_and_a_hub_restart(
    federation: Federation,
) -> None:
    """SecAgg+ on (the default), 3 rounds. After round 1, site-b's agent is killed and the hub
    operator (and its gateway) restarted: clients keep training, the agent comes back and
    adopts its pod, the hub adopts every site's pods; nothing runs twice. The hub never calls
    a site's API server."""
    for name in SITES:
        federation.add_site(name).start_agent()
    wait_for(lambda: all(federation.site_status(s).get("connected") for s in SITES), 60, "agents connected")
    federation.cluster.apply(remote_training("digits", SITES))
    wait_for(
        lambda: int(training_status(federation, "digits").get("completedRounds", 0)) >= 1, 300, "round 1"
    )
    federation.sites["site-b"].kill_agent()
    federation.kill_operator()
    federation.start_operator()
    federation.sites["site-b"].start_agent()
    wait_for(
        lambda: training_status(federation, "digits").get("phase") in ("Succeeded", "Failed"),
        300,
        "training done",
    )
    status = federation.cluster.get("FederatedTraining", "default", "digits")["status"]  # type: ignore[index]
    assert status["phase"] == "Succeeded", (status, federation.logs())
    assert status["completedRounds"] == 3
    assert status["controller"]["clientStarts"] == {"site-a-0": 1, "site-b-0": 1, "site-c-0": 1}
    for site in federation.sites.values():
        site.ran_one_pod_and_removed_it("digits")  # with the client's key and manifest
    assert "agent.reconnecting" in federation.sites["site-a"].log.read_text()  # the hub went away

    # the site clusters: only their own agent (and the test's kubelet) ever called them
    for site in federation.sites.values():
        assert site.callers() == {AGENT_TOKEN}, site.callers()
        created = [c for c in site.api.calls if c.verb == "create" and c.resource == "pods"]
        assert {c.user for c in created} == {AGENT_TOKEN}
        client_log = site.kubelet.logs(f"digits-{site.name}-0")
        assert "transport.plaintext" not in client_log
    # no client key was made at the hub: no client Secret there, only the CA, server and lineage keys
    hub_secrets = {
        s["metadata"]["name"]
        for s in federation.cluster.items("Secret", selector="fedfleet.io/training=digits")
    }
    assert hub_secrets == {"digits-ca", "digits-aggregator-tls", "digits-lineage-key"}
    # the hub chart with its site gateway grants every request the hub operator made
    hub_chart = render(HUB, load_values(HUB / "ci" / "site-gateway.yaml"))
    used = {permission(c) for c in federation.hub.calls if c.user == OPERATOR_TOKEN}
    assert used - granted(of_kind(hub_chart, "ClusterRole")[0]) == set()
    retried = bool(status["controller"].get("roundFailures"))  # a retried round's clients upload again
    for name in SITES:
        shown = federation.site_status(name)
        assert shown["connected"] is True and shown["agentVersion"], shown
        # what the aggregator counted for the site's one client, written once more at the end
        account = shown["trainings"]["default/digits"]
        assert account["updatesAccepted"] == 3 or (retried and account["updatesAccepted"] > 3), shown
        assert account["bytesReceived"] > 0 and account["bytesSent"] > 0 and account["clientSeconds"] > 0
        assert shown["updatesAccepted"] == account["updatesAccepted"]  # the only training: the total
    listed = subprocess.run(
        ["kubectl", "--kubeconfig", str(federation.hub.kubeconfig), "get", "federationsites", "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split("\n")
    header = listed[0].split()
    assert header == [
        *("NAME", "NAMESPACE", "GPUS", "READY", "REMOTE", "CONNECTED", "CLIENTS", "UPDATES", "AGENT"),
        *("HEARTBEAT", "GPUSINUSE", "REFUSED", "RECEIVED", "SENT", "CLIENTSECONDS", "AGE"),
    ], listed
    starts, at = [], 0  # kubectl aligns values under headers (AGE is also the start of AGENT)
    for column in header:
        at = listed[0].index(column, at)
        starts.append(at)
        at += len(column)
    row = {
        column: listed[1][start : [*starts, len(listed[1])][k + 1]].strip()
        for k, (column, start) in enumerate(zip(header, starts, strict=True))
    }
    assert (row["NAME"], row["REMOTE"], row["CONNECTED"], row["AGENT"]) == (
        "site-a",
        "true",
        "true",
        "0.1.0",
    ), listed
    assert int(row["UPDATES"]) >= 3 and int(row["SENT"]) > 0 and float(row["CLIENTSECONDS"]) > 0, listed


def test_work_the_site_policy_refuses_starts_nothing_there_and_the_reason_reaches_the_hub(
    federation: Federation,
) -> None:
    site = federation.add_site("site-a", policy={"allowedRegistries": ["registry.site-a.example"]})
    site.start_agent()
    wait_for(lambda: federation.site_status("site-a").get("connected"), 60, "agent connected")
    manifest = remote_training("refused", ["site-a"], minClients=1)
    manifest["spec"]["secureAggregation"] = {"enabled": False}  # type: ignore[index]
    manifest["spec"]["client"] = {"image": "registry.hub.example/fedfleet:1"}  # type: ignore[index]
    federation.cluster.apply(manifest)
    refused = wait_for(
        lambda: training_status(federation, "refused").get("refusedClients"), 60, "the refusal at the hub"
    )
    assert refused == {
        "site-a-0": "site policy allowedRegistries: image registry.hub.example/fedfleet:1 is not from an "
        "allowed registry"
    }
    events = federation.cluster.events("refused")
    assert ("ClientRefused", f"client site-a-0: {refused['site-a-0']}") in events
    assert training_status(federation, "refused").get("controller", {}).get("clientStarts") == {"site-a-0": 1}
    assert site.client_pods() == []
    assert not [c for c in site.api.calls if c.verb == "create" and c.resource == "pods"]
    assert site.cluster.items("Secret", selector="fedfleet.io/training=refused") == []
    wait_for(lambda: federation.site_status("site-a").get("refusedWork") == 1, 20, "refusedWork in status")


ROUNDS = 10  # rounds of a few tenths of a second: some surely start after the suspension


def test_a_suspended_and_a_deleted_site_are_cut_off_the_aggregator_and_the_training_goes_on(
    federation: Federation,
) -> None:
    """Mid-training, `spec.suspended` on one remote site and `kubectl delete` of another: their
    streams close and, within seconds, the aggregator refuses their clients' still valid
    certificates; rounds go on with the remaining site without waiting for them, and the
    training names the deleted site instead of stopping on it."""
    names = ["site-a", "site-b", "site-c"]
    for name in names:
        federation.add_site(name).start_agent()
    wait_for(lambda: all(federation.site_status(s).get("connected") for s in names), 60, "agents")
    manifest = remote_training(
        "cutoff", names, rounds=ROUNDS, minClients=1, secureAggregation={"enabled": False}
    )
    federation.cluster.apply(manifest)
    wait_for(
        lambda: int(training_status(federation, "cutoff").get("completedRounds", 0)) >= 1, 300, "round 1"
    )
    federation.cluster.custom.patch_namespaced_custom_object(
        "fedfleet.io", "v1alpha1", "default", "federationsites", "site-b", {"spec": {"suspended": True}}
    )
    kubectl = ["kubectl", "--kubeconfig", str(federation.hub.kubeconfig)]
    subprocess.run([*kubectl, "delete", "federationsite", "site-c"], check=True, timeout=30)
    for name, why in (
        ("site-b", "its FederationSite is suspended at the hub"),
        ("site-c", "its FederationSite was deleted at the hub"),
    ):
        refused = f"site '{name}' was revoked at the hub: {why}"
        client_log = lambda n=name: federation.sites[n].kubelet.logs(f"cutoff-{n}-0")  # noqa: E731
        wait_for(lambda r=refused, c=client_log: r in c(), 20, f"the aggregator refusing {name}")
    refused_after = int(training_status(federation, "cutoff")["completedRounds"])
    wait_for(
        lambda: training_status(federation, "cutoff").get("phase") in ("Succeeded", "Failed"),
        120,
        "training done",
    )
    status = training_status(federation, "cutoff")
    assert status["phase"] == "Succeeded", (status, federation.logs())
    rounds = {
        r["metadata"]["name"]: (r.get("status") or {}).get("reportedClients", [])
        for r in federation.cluster.items("FederatedRound", "default")
    }
    # the round open when b and c were refused may have had their updates; every round after is a's alone
    later = [f"cutoff-r{n:04d}" for n in range(refused_after + 2, ROUNDS + 1)]
    assert later and all(rounds[name] == ["site-a-0"] for name in later), rounds
    assert status["controller"]["clientStarts"] == {"site-a-0": 1, "site-b-0": 1, "site-c-0": 1}
    assert status["removedSites"] == ["site-c"]
    assert [m for reason, m in federation.cluster.events("cutoff") if reason == "SiteRemoved"] == [
        "site site-c removed mid-training (its FederationSite was deleted at the hub): the aggregator "
        "refuses its clients and rounds go on with the other sites (minClients 1)"
    ]
    wait_for(
        lambda: federation.site_status("site-b").get("connected") is False, 30, "site-b shown disconnected"
    )


def test_a_training_deleted_while_the_hub_and_the_agent_were_away_leaves_nothing_at_the_site(
    federation: Federation,
) -> None:
    """The hub operator and the site's agent are both down when a running training is deleted;
    the hub comes back and finishes the deletion before the agent reconnects, so no stream hears
    of the end. The agent then reports the training's pod: the hub looks the training up, finds it
    gone, and tells the site to remove the pod, its key and its manifest."""
    site = federation.add_site("site-a")
    site.start_agent()
    wait_for(lambda: federation.site_status("site-a").get("connected"), 60, "agent connected")
    federation.cluster.apply(
        remote_training("gone", ["site-a"], rounds=1000, minClients=1, secureAggregation={"enabled": False})
    )
    wait_for(
        lambda: any((p.get("status") or {}).get("phase") == "Running" for p in site.client_pods()),
        120,
        "the site's client running",
    )
    site.kill_agent()
    federation.kill_operator()
    federation.cluster.delete("FederatedTraining", "default", "gone")  # waits on the operator's finalizer
    federation.start_operator()
    wait_for(lambda: federation.cluster.get("FederatedTraining", "default", "gone") is None, 60, "deleted")
    assert [p["metadata"]["name"] for p in site.client_pods()] == ["gone-site-a-0"]
    site.start_agent()
    site.ran_one_pod_and_removed_it("gone")
    assert "site.orphans_ended" in federation.logs()
    hub_chart = render(HUB, load_values(HUB / "ci" / "site-gateway.yaml"))  # the look-up is granted
    used = {permission(c) for c in federation.hub.calls if c.user == OPERATOR_TOKEN}
    assert used - granted(of_kind(hub_chart, "ClusterRole")[0]) == set()
