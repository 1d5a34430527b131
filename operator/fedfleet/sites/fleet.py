"""The hub's side of remote sites, behind the same seam as local client pods: the client logic
(`controller.client_pods`) asks it to start, stop or give up a client; instead of the
Kubernetes API, the wish goes into the site's desired state, which the gateway streams to the
site's agent whole (`SiteWork`). What the agent reports comes back as pod summaries, so a
remote client is judged by the same code as a local pod.

No second control loop: nothing here decides anything; a reconcile pass calls `observe` and
then `start`/`stop`/`give_up` as it would on a local site.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.api.training import FederatedTraining, FederatedTrainingSpec
from fedfleet.controller import resources as res
from fedfleet.controller.certificates import CertificateError
from fedfleet.controller.client_pods import PodWriter
from fedfleet.logs import get_logger
from fedfleet.sites import wire
from fedfleet.sites.enrolment import SiteName
from fedfleet.v1 import site_gateway_pb2 as pb

Object = dict[str, Any]
TrainingKey = tuple[str, str]  # (namespace, name) at the hub
ClientKey = tuple[str, str, str]  # (training namespace, training, client id)
Signer = Callable[[str, bytes], tuple[bytes, bytes]]  # client id, CSR -> (certificate, trust bundle)
log = get_logger(component="site-gateway")


@dataclass
class ClientWish:
    index: int
    partition: int
    attempt: int
    given_up: bool = False
    certificate: bytes = b""
    ca: bytes = b""


@dataclass
class TrainingWish:
    ref: res.TrainingRef
    manifest: bytes
    address: str
    clients: dict[str, ClientWish] = field(default_factory=dict)


@dataclass
class Site:
    """One remote site as the hub knows it, connected or not."""

    name: SiteName
    connected: bool = False
    agent_version: str = ""
    last_heartbeat: datetime.datetime | None = None
    gpus_in_use: int = 0
    states: dict[ClientKey, pb.SiteClientState] = field(default_factory=dict)
    requests: dict[ClientKey, bytes] = field(default_factory=dict)  # latest CSR per client
    wishes: dict[TrainingKey, TrainingWish] = field(default_factory=dict)
    stopped: dict[ClientKey, int] = field(default_factory=dict)  # attempt the hub removed
    ended: set[TrainingKey] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # new work to send
    revoked: str = ""  # why the stream must close
    reported: bool = False  # a state arrived since this operator started: its pods are known

    def work(self) -> pb.SiteWork:
        trainings = [
            pb.SiteTrainingWork(
                namespace=wish.ref.namespace,
                name=wish.ref.name,
                uid=wish.ref.uid,
                manifest_json=wish.manifest,
                aggregator_address=wish.address,
                clients=[
                    pb.SiteClientWork(
                        client_id=cid,
                        index=c.index,
                        partition=c.partition,
                        attempt=c.attempt,
                        given_up=c.given_up,
                        certificate_pem=c.certificate,
                        ca_pem=c.ca,
                    )
                    for cid, c in sorted(wish.clients.items())
                ],
            )
            for _, wish in sorted(self.wishes.items())
        ]
        return pb.SiteWork(trainings=trainings, ended=[f"{ns}/{n}" for ns, n in sorted(self.ended)])

    def running(self) -> int:
        return sum(1 for s in self.states.values() if s.phase == "Running")

    def refused(self) -> int:
        return sum(1 for s in self.states.values() if s.phase == wire.REFUSED)


class RemoteSites:
    """Every remote site's desired and reported state; shared by the gateway's streams and the
    reconcile passes (one event loop, so no locks). `wake(training)` wakes a training's pass."""

    def __init__(self, wake: Callable[[str], None] = lambda _: None) -> None:
        self.sites: dict[tuple[str, str], Site] = {}
        self.wake = wake
        # a remote client's pod as the hub's client logic names it -> its site, training, client
        self._routes: dict[tuple[str, str], tuple[Site, TrainingKey, str]] = {}

    def site(self, name: SiteName) -> Site:
        key = (name.namespace, name.name)
        if key not in self.sites:
            self.sites[key] = Site(name)
        return self.sites[key]

    def of(self, site: res.SiteRef, hub_namespace: str) -> Site:
        return self.site(SiteName(hub_namespace, site.name))

    # -- from the gateway --------------------------------------------------------------------
    def report(self, site: Site, state: pb.SiteState) -> None:
        """A site's whole state: replaces what it reported before; wakes the trainings it names."""
        site.reported = True
        before = {k: (s.phase, s.attempt, s.exit_code, s.scheduled) for k, s in site.states.items()}
        site.states = {(c.training_namespace, c.training, c.client_id): c for c in state.clients}
        for request in state.certificate_requests:
            site.requests[(request.training_namespace, request.training, request.client_id)] = request.csr_pem
        site.gpus_in_use = state.gpus_in_use
        reported = {k[:2] for k in site.states}
        if site.ended - reported:  # the site removed what ended: no need to say it again
            site.ended &= reported
        after = {k: (s.phase, s.attempt, s.exit_code, s.scheduled) for k, s in site.states.items()}
        touched = {k[1] for k in before.keys() ^ after.keys()} | {
            k[1] for k in after.keys() & before.keys() if after[k] != before[k]
        }
        touched |= {r.training for r in state.certificate_requests}
        for key, client in site.states.items():  # a pod found running: its work is known again
            if (wish := site.wishes.get(key[:2])) is not None:
                _adopt(site, wish, key, client)
        for training in touched:
            self.wake(training)

    def unclaimed(self, site: Site) -> set[TrainingKey]:
        """Trainings the site reports pods of that no reconcile pass wants and none was told ended."""
        return {k[:2] for k in site.states} - site.wishes.keys() - site.ended

    def end(self, site: Site, training: TrainingKey) -> None:
        site.ended.add(training)
        site.changed.set()

    def revoke(self, name: SiteName, reason: str) -> None:
        site = self.sites.get((name.namespace, name.name))
        if site is not None:
            site.revoked = reason
            site.changed.set()

    # -- from a reconcile pass ------------------------------------------------------------------
    def observe(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        sites: list[res.SiteRef],
        address: str,
        sign: Callable[[res.SiteRef, str, bytes], tuple[bytes, bytes]],
        starts: Mapping[str, int],
    ) -> list[Object]:
        """The training's remote clients as pod summaries; keeps each site's wish for the
        training current (manifest, address, clients found running after a hub restart) and
        answers the certificate requests of its clients (`sign`: the training's CA).

        A site that has not reported since this operator started may still run the clients
        started before (`starts`, the training's status): they read as Running until it
        reports, so nothing is started twice."""
        key: TrainingKey = (ref.namespace, ref.name)
        document = res.training_manifest(ref, training)
        # the image the hub would run, named: the site's policy judges it, not its own default
        document["spec"].setdefault("client", {})["image"] = training.spec.client.container_image
        manifest = json.dumps(document, sort_keys=True).encode()
        pods: list[Object] = []
        for site_ref in sites:
            if not site_ref.spec.remote:
                continue
            site = self.of(site_ref, ref.namespace)
            site.ended.discard(key)
            wish = site.wishes.get(key)
            if wish is None or wish.manifest != manifest or wish.address != address or wish.ref != ref:
                clients = wish.clients if wish is not None else {}
                wish = site.wishes[key] = TrainingWish(ref, manifest, address, clients)
                site.changed.set()
            mine = set(_client_ids(site_ref, training.spec))
            for cid in mine:
                self._routes[(site_ref.namespace, res.client_pod_name(ref.name, cid))] = (site, key, cid)
            if not site.reported:
                pods += [
                    wire.placeholder(site_ref, key, cid, starts[cid])
                    for cid in sorted(mine)
                    if starts.get(cid)
                ]
                continue
            for (namespace, name, cid), state in site.states.items():
                if (namespace, name) != key or cid not in mine:
                    continue
                pods.append(wire.pod_summary(site_ref, state))
                _adopt(site, wish, (*key, cid), state)
            for (namespace, name, cid), csr in list(site.requests.items()):
                if (namespace, name) != key:
                    continue
                del site.requests[(namespace, name, cid)]
                if cid not in mine or cid not in wish.clients:
                    log.warning(
                        "site.certificate_refused",
                        site=str(site.name),
                        training=ref.name,
                        reason="not a client of this site",
                    )
                    continue
                try:
                    cert, ca = sign(site_ref, cid, csr)
                except (ValueError, CertificateError) as err:
                    log.warning(
                        "site.certificate_refused",
                        site=str(site.name),
                        training=ref.name,
                        reason=str(err)[:200],
                    )
                    continue
                wish.clients[cid].certificate, wish.clients[cid].ca = cert, ca
                site.changed.set()
        return pods

    # -- the client logic's PodWriter (controller.client_pods), for remote sites' pods ------------
    def owns(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._routes

    async def create(self, pod: Object) -> None:
        """The pod the hub would create becomes the site's wish: client, index, partition and
        attempt (the site builds the pod itself, under its own placement and policy)."""
        meta = pod["metadata"]
        site, key, cid = self._routes[(meta["namespace"], meta["name"])]
        wish = site.wishes[key]  # `observe` made it this pass
        args = pod["spec"]["containers"][0]["args"]
        partition = int(args[args.index("--partition") + 1])
        attempt = int(meta["annotations"][vocab.ANNOTATION_ATTEMPT])
        previous = wish.clients.get(cid)
        wish.clients[cid] = ClientWish(int(cid.rsplit("-", 1)[1]), partition, attempt)
        if previous is not None and previous.certificate:  # a restart keeps the client's certificate
            wish.clients[cid].certificate, wish.clients[cid].ca = previous.certificate, previous.ca
        site.changed.set()

    async def delete(self, namespace: str, name: str) -> None:
        site, key, cid = self._routes[(namespace, name)]
        wish = site.wishes.get(key)
        if wish is not None and cid in wish.clients:
            site.stopped[(*key, cid)] = wish.clients[cid].attempt
            wish.clients[cid].attempt = 0  # attempt 0: no pod; the certificate stays for the next start
            site.changed.set()

    async def mark_given_up(self, namespace: str, name: str) -> None:
        site, key, cid = self._routes[(namespace, name)]
        wish = site.wishes.get(key)
        if wish is not None and cid in wish.clients:
            wish.clients[cid].given_up = True
            site.changed.set()

    def forget(self, ref: res.TrainingRef) -> None:
        """The training ended or went away: every site that ran it removes its pods and secrets."""
        key = (ref.namespace, ref.name)
        self._routes = {route: to for route, to in self._routes.items() if to[1] != key}
        for site in self.sites.values():
            if site.wishes.pop(key, None) is not None or any(k[:2] == key for k in site.states):
                site.ended.add(key)
                site.changed.set()


def _client_ids(site: res.SiteRef, spec: FederatedTrainingSpec) -> list[str]:
    return res.client_ids(site.name, spec.clients_per_site)


def _adopt(site: Site, wish: TrainingWish, key: ClientKey, state: pb.SiteClientState) -> None:
    """A client pod the site runs that the hub's wish lacks (a restarted hub) joins the wish as
    it is, unless the hub itself removed that attempt; the pass then judges it like any pod."""
    cid = key[2]
    if cid in wish.clients or state.phase == wire.REFUSED or state.attempt <= site.stopped.get(key, 0):
        return
    wish.clients[cid] = ClientWish(state.index, state.partition, state.attempt, state.given_up)
    site.changed.set()


class SitePods:
    """The client logic's `PodWriter`: a remote site's pods go to its wish (`RemoteSites`), every
    other pod to the hub's Kubernetes API."""

    def __init__(self, local: PodWriter, remote: RemoteSites) -> None:
        self.local = local
        self.remote = remote

    def _for(self, namespace: str, name: str) -> PodWriter:
        return self.remote if self.remote.owns(namespace, name) else self.local

    async def create(self, pod: Object) -> None:
        await self._for(pod["metadata"]["namespace"], pod["metadata"]["name"]).create(pod)

    async def mark_given_up(self, namespace: str, name: str) -> None:
        await self._for(namespace, name).mark_given_up(namespace, name)

    async def delete(self, namespace: str, name: str) -> None:
        await self._for(namespace, name).delete(namespace, name)
