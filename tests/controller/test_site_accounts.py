"""Each site's figures in a training into its FederationSite status (controller/site_accounts.py),
against the in-memory API: only the training's own key and the totals are written, other
trainings' figures and the gateway's fields stay, nothing is written while nothing changed or
within the write interval except on the training's last pass, and the gauges follow the
aggregator's figures."""

from __future__ import annotations

from typing import Any

import pytest
from fedfleet import convert
from fedfleet.api.site import FederationSiteSpec
from fedfleet.controller import resources as res
from fedfleet.controller.site_accounts import MAX_TRAININGS, SiteAccounting
from fedfleet.controller.spec_checks import resolve_sites
from fedfleet.rounds.ports import SiteAccount
from fedfleet.v1 import aggregator_pb2 as pb
from prometheus_client import REGISTRY

from tests.controller.memory import MemoryKube, stamp
from tests.trainings import unit_training

pytestmark = pytest.mark.unit

REF = res.TrainingRef("digits", "team", "uid-1")
LIAR = res.TrainingRef("liar", "team", "uid-2")
OTHER = {
    "updatesAccepted": 5,
    "updatesRefused": 0,
    "bytesReceived": 10,
    "bytesSent": 20,
    "clientSeconds": 2.5,
}


def site(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fedfleet.io/v1alpha1",
        "kind": "FederationSite",
        "metadata": {"name": name, "namespace": "sites"},
        "spec": {"remote": True},
        "status": status,
    }


def ran_on(sites: list[dict[str, Any]]) -> list[res.SiteRef]:
    return [
        res.SiteRef(
            s["metadata"]["name"], s["metadata"]["namespace"], FederationSiteSpec.model_validate(s["spec"])
        )
        for s in sites
    ]


def stored(kube: MemoryKube, name: str) -> dict[str, Any]:
    return dict(kube.objects[("federationsites", "sites", name)]["status"])


def gauge(name: str, site_name: str, training: str = "team/digits") -> float | None:
    value = REGISTRY.get_sample_value(name, {"site": f"sites/{site_name}", "training": training})
    return None if value is None else float(value)


async def test_a_training_writes_its_own_key_and_the_totals_only_when_they_change() -> None:
    kube = MemoryKube()
    watched = [site("a", {"connected": True, "trainings": {"team/other": OTHER}}), site("b", {})]
    for obj in watched:
        kube.objects[("federationsites", "sites", obj["metadata"]["name"])] = dict(obj)
    accounts = SiteAccounting(kube, write_seconds=30)
    a, b = SiteAccount("a", 1, 1, 100, 200, 3.25), SiteAccount("b", 2, 0, 300, 400, 4.0)

    await accounts.record(REF, watched, ran_on(watched), [a, b], final=False)
    assert [m for m, _ in kube.requests] == ["PATCH", "PATCH"]
    shown = stored(kube, "a")
    assert shown["connected"] is True and shown["trainings"]["team/other"] == OTHER  # not ours: kept
    mine = shown["trainings"]["team/digits"]
    assert {k: v for k, v in mine.items() if k != "updated"} == {
        "updatesAccepted": 1,
        "updatesRefused": 1,
        "bytesReceived": 100,
        "bytesSent": 200,
        "clientSeconds": 3.2,
    }
    assert (shown["updatesAccepted"], shown["bytesSent"], shown["clientSeconds"]) == (6, 220, 5.7)
    assert gauge("fedfleet_site_updates_accepted", "a") == 1 and gauge("fedfleet_site_bytes_sent", "b") == 400

    kube.requests.clear()
    await accounts.record(REF, watched, ran_on(watched), [a, b], final=False)  # unchanged: nothing written
    later = SiteAccount("a", 2, 1, 150, 300, 5.0)
    await accounts.record(
        REF, watched, ran_on(watched), [later, b], final=False
    )  # changed, within 30 s: not yet
    assert kube.requests == []
    assert gauge("fedfleet_site_updates_accepted", "a") == 2  # the gauges follow at once
    await accounts.record(REF, watched, ran_on(watched), [later, b], final=True)  # the training's last pass
    assert [(m, p.rsplit("/", 2)[-2]) for m, p in kube.requests] == [("PATCH", "a")]  # b unchanged
    assert stored(kube, "a")["trainings"]["team/digits"]["updatesAccepted"] == 2

    accounts.forget(REF.uid)
    assert gauge("fedfleet_site_updates_accepted", "a") is None


async def test_a_site_keeps_the_trainings_updated_last() -> None:
    kube = MemoryKube()
    old = {f"team/t{i:02d}": OTHER | {"updated": stamp(1000 - i)} for i in range(MAX_TRAININGS)}
    watched = [site("a", {"trainings": old})]
    kube.objects[("federationsites", "sites", "a")] = dict(watched[0])
    await SiteAccounting(kube).record(REF, watched, ran_on(watched), [SiteAccount("a", 1)], final=True)
    kept = stored(kube, "a")["trainings"]
    assert len(kept) == MAX_TRAININGS and "team/digits" in kept and "team/t00" not in kept  # the oldest went
    assert stored(kube, "a")["updatesAccepted"] == 5 * (MAX_TRAININGS - 1) + 1


async def test_a_lying_aggregator_writes_no_other_sites_figures_and_no_impossible_ones() -> None:
    """Another tenant's site, NaN or negative client-seconds, a count past int64: none reach a
    FederationSite's status or the gauges; the training's honest figures still do."""
    kube = MemoryKube()
    watched = [site("a", {}), site("b", {}), site("elsewhere", {})]
    for obj in watched:
        kube.objects[("federationsites", "sites", obj["metadata"]["name"])] = dict(obj)
    lies = [
        SiteAccount("elsewhere", 7, 0, 1, 1, 1.0),  # not a site of this training
        SiteAccount("b", 1, 0, 1, 1, float("nan")),
        SiteAccount("a", 2**64 - 1, 0, 1, 1, 1.0),
    ]
    accounts = SiteAccounting(kube)
    await accounts.record(LIAR, watched, ran_on(watched[:2]), lies, final=True)
    assert kube.requests == []
    assert gauge("fedfleet_site_updates_accepted", "a", "team/liar") is None
    await accounts.record(
        LIAR, watched, ran_on(watched[:2]), [SiteAccount("b", 1, 0, 1, 1, -3.0)], final=True
    )
    assert kube.requests == []

    await accounts.record(
        LIAR, watched, ran_on(watched[:2]), [SiteAccount("a", 1, 0, 10, 20, 1.5)], final=True
    )
    assert [p.rsplit("/", 2)[-2] for _, p in kube.requests] == ["a"]
    assert stored(kube, "a")["trainings"]["team/liar"]["updatesAccepted"] == 1
    assert "trainings" not in stored(kube, "elsewhere")
    accounts.forget(LIAR.uid)


async def test_a_site_whose_pods_run_in_another_namespace_gets_its_figures() -> None:
    """spec.namespace moves a site's pods, not its FederationSite: the figures still land there."""
    kube = MemoryKube()
    moved = site("a", {}) | {"spec": {"namespace": "clinic-pods"}}
    kube.objects[("federationsites", "sites", "a")] = dict(moved)
    training = unit_training({"rounds": 1, "sites": {"names": ["a"]}, "minClients": 1})
    sites = resolve_sites(training, [moved])
    assert [s.namespace for s in sites] == ["clinic-pods"]
    accounts = SiteAccounting(kube)
    await accounts.record(REF, [moved], sites, [SiteAccount("a", 3, 0, 10, 20, 1.5)], final=True)
    assert stored(kube, "a")["trainings"]["team/digits"]["updatesAccepted"] == 3
    assert gauge("fedfleet_site_updates_accepted", "a") == 3
    accounts.forget(REF.uid)


def test_the_operator_reads_no_more_site_figures_than_an_aggregator_may_show() -> None:
    """A lying aggregator's entries past the bound are not read (nor refused one by one in the log)."""
    many = pb.AggregatorStatus(
        sites=[pb.SiteAccount(site=f"s{i}") for i in range(convert.MAX_STATUS_SITES + 500)]
    )
    sites = convert.aggregator_view(many).sites
    assert [a.site for a in sites] == [f"s{i}" for i in range(convert.MAX_STATUS_SITES)]
