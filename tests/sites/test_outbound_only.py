"""Sites that can only dial out: each site's agent and client pods run in the site's own network
namespace, which drops every new connection coming in (tests/sites/netns.py). The hub reaches no
site; the sites reach the hub's gateway and aggregator. One site's network is then cut for longer
than a round's deadline: the round closes on `minClients`, the site comes back on its own and
trains the next round, and nothing is started twice."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controller.cluster import training_manifest, wait_for
from tests.dataplane.harness import free_port
from tests.sites.harness import AGENT_TOKEN, Federation, start_federation
from tests.sites.netns import Network, unavailable

SITES = ["site-a", "site-b"]
ROUND_DEADLINE = 10


@pytest.fixture
def outbound(tmp_path: Path) -> Iterator[tuple[Federation, Network]]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"outbound-only sites need network namespaces: {reason}")
    network = Network().open()
    federation = start_federation(tmp_path)
    federation.hub_host = network.hub_ip
    try:
        yield federation, network
    finally:
        federation.close()
        network.close()


def rounds(federation: Federation) -> dict[int, dict[str, Any]]:
    found = {r["metadata"]["name"]: r.get("status") or {} for r in federation.cluster.items("FederatedRound")}
    return {int(m[1]): status for name, status in found.items() if (m := re.fullmatch(r".*-r(\d+)", name))}


def test_outbound_only_sites_train_through_a_network_cut_longer_than_the_round_deadline(
    outbound: tuple[Federation, Network],
) -> None:
    federation, network = outbound
    for name in SITES:
        federation.add_site(name, network=network.site(name)).start_agent()
    assert all(net.refuses_inbound() for net in network.sites)  # the drop rule is in place
    wait_for(lambda: all(federation.site_status(s).get("connected") for s in SITES), 60, "agents connected")
    port = free_port()
    manifest = training_manifest(
        "outbound",
        port,
        SITES,
        # Rounds here take well under a second, so several close between reading completedRounds
        # and the cut: the cut closed the 4th round in most runs and the 6th (the last, when there
        # were six) in one. Twenty leave room for site-b to rejoin after any cut seen so far.
        rounds=20,
        minClients=1,
        roundTimeoutSeconds=ROUND_DEADLINE,
        secureAggregation={"enabled": False},
    )
    manifest["spec"]["aggregator"]["externalAddress"] = f"{network.hub_ip}:{port}"
    federation.cluster.apply(manifest)

    def status() -> dict[str, Any]:
        found = federation.cluster.get("FederatedTraining", "default", "outbound") or {}
        return dict(found.get("status") or {})

    wait_for(lambda: int(status().get("completedRounds", 0)) >= 1, 120, "round 1")
    site_b = federation.sites["site-b"]
    assert site_b.network is not None
    before_cut = int(status()["completedRounds"])
    site_b.network.cut()

    def without_b() -> int | None:
        done = sorted(
            (n, r.get("reportedClients", []))
            for n, r in rounds(federation).items()
            if r.get("phase") == "Succeeded"
        )
        return next((n for n, clients in done if n > before_cut and "site-b-0" not in clients), None)

    cut_round = wait_for(without_b, 3 * ROUND_DEADLINE + 30, "a round that closed without site-b")
    site_b.network.restore()
    wait_for(lambda: status().get("phase") in ("Succeeded", "Failed"), 120, "training done")

    final = status()
    assert final["phase"] == "Succeeded", (final, federation.logs())
    closed = rounds(federation)
    assert closed[cut_round]["reportedClients"] == ["site-a-0"], closed[cut_round]
    after = [closed[n]["reportedClients"] for n in sorted(closed) if n > cut_round]
    assert after and "site-b-0" in after[-1], closed  # the site came back and trained again
    assert final["controller"]["clientStarts"] == {"site-a-0": 1, "site-b-0": 1}
    for site in federation.sites.values():
        site.ran_one_pod_and_removed_it("outbound")
        assert site.callers() == {AGENT_TOKEN}, site.callers()
