"""Each site's figures in a training (updates accepted and refused, bytes, client-seconds), from
the training's aggregator (`AggregatorView.sites`), into the site's FederationSite status under
`trainings["<namespace>/<training>"]`, with totals over the trainings listed for the printer
columns, and into Prometheus gauges.

A write is a JSON merge patch of that one key and the totals, so trainings and the site gateway
(which writes the connection fields) never overwrite each other's; it is sent only when the
site's figures changed, at most every `write_seconds` per training, and once more on the pass
that ends it. The totals are summed from what this operator holds of each site (seeded from the
watched site once, then kept current by its own writes: one operator writes them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException

from fedfleet import vocabulary as vocab
from fedfleet.api.status import SiteStatus, SiteTrainingAccount
from fedfleet.controller import metrics
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.status import now_rfc3339
from fedfleet.convert import site_training_account
from fedfleet.logs import get_logger
from fedfleet.rounds.ports import SiteAccount

Object = dict[str, Any]
MAX_TRAININGS = 50  # per site: the most recently updated are kept
INT64_MAX = 2**63 - 1  # the API server's integers
NOT_OURS = "not one of the training's FederationSites"
GAUGES = (
    metrics.SITE_UPDATES_ACCEPTED,
    metrics.SITE_UPDATES_REFUSED,
    metrics.SITE_BYTES_RECEIVED,
    metrics.SITE_BYTES_SENT,
    metrics.SITE_CLIENT_SECONDS,
)
log = get_logger(component="operator")


class SiteAccounting:
    def __init__(self, kube: Kube, write_seconds: float = 30.0) -> None:
        self.kube = kube
        self.write_seconds = write_seconds
        self._written: dict[str, tuple[float, dict[str, SiteAccount]]] = {}  # uid -> (when, by site)
        self._sites: dict[tuple[str, str], dict[str, SiteTrainingAccount]] = {}  # site -> its trainings
        self._labels: dict[str, set[tuple[str, str]]] = {}  # uid -> the gauges' label pairs
        self._refused: set[tuple[str, str]] = set()  # (uid, site) whose figures were refused, logged

    async def record(
        self,
        ref: res.TrainingRef,
        sites: Iterable[Object],
        ran_on: Iterable[res.SiteRef],
        accounts: Iterable[SiteAccount],
        final: bool,
    ) -> None:
        """`sites`: the FederationSites (the watched index); `ran_on`: the training's sites, the
        only ones its aggregator may account for; `final`: the pass that ends the training.
        The aggregator may lie: figures for another site, or ones no count can be, are not
        written (logged once per site)."""
        key = f"{ref.namespace}/{ref.name}"
        own = {(s.namespace, s.name) for s in ran_on}  # SiteRef.namespace: where its pods run
        objects = {name: s for s in sites if (res.pods_namespace(s), name := s["metadata"]["name"]) in own}
        figures: dict[str, SiteAccount] = {}
        for account in accounts:
            why = NOT_OURS if account.site not in objects else implausible(account)
            if why is None:
                figures[account.site] = account
            elif (ref.uid, account.site[:253]) not in self._refused:
                self._refused.add((ref.uid, account.site[:253]))
                log.warning("site.accounts_refused", site=account.site[:253], training=key, reason=why)
        for site, account in figures.items():
            found = objects[site]
            self._gauges(ref.uid, f"{found['metadata']['namespace']}/{site}", key, account)
        when, before = self._written.get(ref.uid, (0.0, {}))
        if figures == before or (not final and time.monotonic() - when < self.write_seconds):
            return
        for site, account in figures.items():
            if account == before.get(site):
                continue
            try:
                await self._write(objects[site], key, account)
            except ApiException as err:  # the next change writes it; the training goes on
                log.warning("site.accounts_not_written", site=site, training=key, status=err.status)
        self._written[ref.uid] = (time.monotonic(), figures)

    async def _write(self, site: Object, key: str, account: SiteAccount) -> None:
        meta = site["metadata"]
        name = (meta["namespace"], meta["name"])
        if name not in self._sites:
            self._sites[name] = dict(SiteStatus.model_validate(site.get("status") or {}).trainings or {})
        trainings = self._sites[name]
        trainings[key] = site_training_account(account, updated=now_rfc3339())
        by_age = sorted(trainings, key=lambda k: (k == key, trainings[k].updated or ""))
        dropped = by_age[: max(0, len(trainings) - MAX_TRAININGS)]
        for old in dropped:
            del trainings[old]
        kept = trainings.values()
        patch: Object = {
            "trainings": {key: trainings[key].dump(), **dict.fromkeys(dropped)},
            "updatesAccepted": sum(t.updates_accepted for t in kept),
            "updatesRefused": sum(t.updates_refused for t in kept),
            "bytesReceived": sum(t.bytes_received for t in kept),
            "bytesSent": sum(t.bytes_sent for t in kept),
            "clientSeconds": round(sum(t.client_seconds for t in kept), 1),
        }
        await self.kube.patch_status(vocab.SITE, name[0], name[1], patch)

    def _gauges(self, uid: str, site: str, training: str, account: SiteAccount) -> None:
        values = (
            account.updates_accepted,
            account.updates_refused,
            account.bytes_received,
            account.bytes_sent,
            account.client_seconds,
        )
        for gauge, value in zip(GAUGES, values, strict=True):
            gauge.labels(site=site, training=training).set(value)
        self._labels.setdefault(uid, set()).add((site, training))

    def forget(self, uid: str) -> None:
        """A training gone: its gauges go (its figures stay in the sites' status)."""
        self._written.pop(uid, None)
        self._refused = {r for r in self._refused if r[0] != uid}
        for labels in self._labels.pop(uid, set()):
            for gauge in GAUGES:
                gauge.remove(*labels)


def implausible(account: SiteAccount) -> str | None:
    """Why figures cannot be a count of anything (the API server would refuse them too)."""
    counts = (account.updates_accepted, account.updates_refused, account.bytes_received, account.bytes_sent)
    if any(not 0 <= value <= INT64_MAX for value in counts):
        return "a count outside 0..2^63-1"
    if not (math.isfinite(account.client_seconds) and 0 <= account.client_seconds <= INT64_MAX):
        return "client-seconds not a finite, non-negative number"
    return None
