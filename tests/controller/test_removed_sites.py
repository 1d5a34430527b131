"""A site deleted at the hub mid-training: before the training started a missing site is an
InvalidSpec; after, it keeps its place (the other sites' data partitions stay), its pods are
removed, its clients are revoked at the aggregator and seen down, and rounds go on with
minClients. The decision against in-memory ports (milliseconds); the remote end-to-end test
runs it with real processes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fedfleet.api.site import FederationSiteSpec
from fedfleet.api.status import SiteRecord
from fedfleet.controller import core
from fedfleet.controller import resources as res
from fedfleet.controller.client_pods import ClientPods
from fedfleet.controller.revocation import SUSPENDED_SITE, Revocations, revoked_sites, without_revoked
from fedfleet.controller.settings import OperatorSettings
from fedfleet.controller.spec_checks import SITE_DELETED, InvalidSpec, resolve_sites
from fedfleet.controller.status_writer import Pass
from fedfleet.rounds.driver import Bookkeeping, RoundDriver, Step
from fedfleet.rounds.ports import FleetState

from tests.controller.fake_pods import MemoryPods
from tests.rounds.fakes import Clock, FakeAggregator, FakeFleet, FakeRecorder
from tests.trainings import unit_training

pytestmark = pytest.mark.unit

REF = res.TrainingRef("t", "default", "uid-t")
TRAINING = unit_training(
    {"rounds": 3, "sites": {"names": ["a", "b", "c"]}, "minClients": 1, "roundTimeoutSeconds": 30}
)
RAN_ON = [
    SiteRecord(name=n, namespace=ns) for n, ns in (("a", "default"), ("b", "hospital"), ("c", "default"))
]


def site(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_a_missing_site_stops_a_training_before_it_starts_but_not_after() -> None:
    left = [site("a"), site("c", remote=True, suspended=True)]
    with pytest.raises(InvalidSpec, match="no FederationSite named b"):
        resolve_sites(TRAINING, left)
    sites = resolve_sites(TRAINING, left, RAN_ON)
    assert [(s.name, s.namespace, s.gone) for s in sites] == [
        ("a", "default", ""),
        ("b", "hospital", SITE_DELETED),  # in its place: c keeps partition 2
        ("c", "default", ""),
    ]
    assert revoked_sites(sites) == {"b": SITE_DELETED, "c": SUSPENDED_SITE}


def test_sites_of_one_name_in_two_namespaces_are_refused_but_a_started_training_keeps_its_own() -> None:
    """A site's name is its identity (certificates, figures): two of one name are ambiguous."""
    twins = [site("a"), site("b", "hospital"), site("b", "clinic"), site("c")]
    with pytest.raises(InvalidSpec, match="FederationSites named b in namespaces clinic, hospital: "):
        resolve_sites(TRAINING, twins)
    sites = resolve_sites(TRAINING, twins, RAN_ON)  # b ran in hospital: a twin made since changes nothing
    assert [(s.name, s.namespace) for s in sites] == [("a", "default"), ("b", "hospital"), ("c", "default")]
    strangers = [site("a"), site("b", "clinic"), site("b", "lab"), site("c")]
    with pytest.raises(InvalidSpec, match="named b in namespaces clinic, lab"):
        resolve_sites(TRAINING, strangers, RAN_ON)  # neither is the one it ran on


async def test_a_deleted_site_s_pod_is_removed_once_and_never_started_again() -> None:
    store = MemoryPods()
    pods = ClientPods(store, lambda *_: None, OperatorSettings())
    whole = [res.SiteRef(n, "default", FederationSiteSpec()) for n in ("a", "b", "c")]
    status: dict[str, Any] = {}

    async def run(sites: list[res.SiteRef], lagging: list[dict[str, Any]] = []) -> FleetState:  # noqa: B006
        nonlocal status
        step = Pass({"metadata": {"name": "t", "namespace": "default", "generation": 1}, "status": status})
        index = list(store.pods.values()) + lagging  # the watch may still show a deleted pod
        state = await pods.ensure(REF, TRAINING, sites, index, "agg:1", step)
        status = step.status.dump()
        return state

    await run(whole)
    partition = store.pods[("default", "t-c-0")]["spec"]["containers"][0]["args"]
    b_pod = store.pods[("default", "t-b-0")]
    store.calls.clear()
    gone = [whole[0], res.SiteRef("b", "default", FederationSiteSpec(), SITE_DELETED), whole[2]]
    state = await run(gone)
    assert store.calls == [("delete", "t-b-0")]
    assert state.live == {"a-0", "c-0"}
    await run(gone, lagging=[b_pod])
    await run(gone)
    assert store.calls == [("delete", "t-b-0")], "neither deleted twice nor started again"
    del store.pods[("default", "t-c-0")]
    await run(gone)  # c's restart keeps its data partition: b kept its place
    assert store.pods[("default", "t-c-0")]["spec"]["containers"][0]["args"] == partition


class RevokingAggregator(FakeAggregator):
    """The fake aggregator with `RevokeSites`: a revoked site's clients are forgotten as ready."""

    told: list[dict[str, str]]

    async def revoke_sites(self, sites: Mapping[str, str]) -> list[str]:
        self.told.append(dict(sites))
        cut = sorted(c for c in self.ready if c.rsplit("-", 1)[0] in sites)
        self.ready -= set(cut)
        return cut


async def test_rounds_go_on_without_a_deleted_site_and_the_aggregator_is_told_until_it_is_back() -> None:
    clock = Clock()
    aggregator = RevokingAggregator(clock, ready={"a-0", "b-0", "c-0"})
    aggregator.told = []
    fleet = FakeFleet(live={"a-0", "b-0", "c-0"})
    book = Bookkeeping()

    async def step() -> core.Action:
        result = await RoundDriver(TRAINING.spec, aggregator, fleet, FakeRecorder(), clock=clock).step(book)
        assert isinstance(result, Step), result
        return result.action

    assert await step() == core.StartRound(1, "train", ("a-0", "b-0", "c-0"), 30, 1)
    aggregator.report("a-0", "c-0")
    revocations = Revocations()
    sites = resolve_sites(TRAINING, [site("a"), site("c")], RAN_ON)  # b deleted mid-round
    revoked = revoked_sites(sites)
    await revocations.tell(REF.uid, REF.name, revoked, aggregator)
    state = without_revoked(FleetState(frozenset({"a-0", "b-0", "c-0"})), revoked, 1)
    fleet.live, fleet.down = set(state.live), dict(state.down)
    assert fleet.down == {"b-0": SITE_DELETED}
    await step()  # b-0 dropped: the round closes on the two that reported
    assert aggregator.drops == [(1, "b-0", SITE_DELETED)]
    assert aggregator.current is not None and aggregator.current.phase == "Succeeded"
    assert await step() == core.StartRound(2, "train", ("a-0", "c-0"), 30, 1)
    await revocations.tell(REF.uid, REF.name, revoked, aggregator)
    await revocations.tell(REF.uid, REF.name, {}, aggregator)  # b is back
    await revocations.tell(REF.uid, REF.name, {}, aggregator)
    assert aggregator.told == [{"b": SITE_DELETED}, {"b": SITE_DELETED}, {}], (
        "told every pass, then once empty"
    )
