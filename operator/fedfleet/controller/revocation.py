"""Sites whose clients the aggregator must refuse: a remote site suspended at the hub, and any
site gone (deleted) since the training started. Their clients' certificates stay valid until
they expire, so the aggregator is told (`RevokeSites`), and the round driver sees those clients
as down, so rounds neither wait for nor count them and go on with `minClients`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fedfleet.controller import resources as res
from fedfleet.logs import get_logger
from fedfleet.rounds.ports import AggregatorError, FleetState

SUSPENDED_SITE = "its FederationSite is suspended at the hub"
log = get_logger(component="operator")


def revoked_sites(sites: list[res.SiteRef]) -> dict[str, str]:
    """Site -> why its clients are refused."""
    return {s.name: s.gone or SUSPENDED_SITE for s in sites if s.gone or (s.spec.remote and s.spec.suspended)}


def without_revoked(fleet: FleetState, revoked: Mapping[str, str], clients_per_site: int) -> FleetState:
    """The fleet with the revoked sites' clients down, each with its site's reason."""
    cut = {cid: why for site, why in revoked.items() for cid in res.client_ids(site, clients_per_site)}
    if not cut:
        return fleet
    return FleetState(fleet.live - cut.keys(), {**fleet.down, **dict(sorted(cut.items()))})


class SiteRevoker(Protocol):
    """The aggregator's `RevokeSites` (`rounds.control.ControlAggregator`)."""

    async def revoke_sites(self, sites: Mapping[str, str]) -> list[str]: ...


class Revocations:
    """What each training's aggregator was told last, so a pass tells it only while a site is
    revoked (every pass: an aggregator that restarted learns it again) and once more, empty,
    when none is left."""

    def __init__(self) -> None:
        self._told: dict[str, dict[str, str]] = {}  # training uid -> revoked sites -> why

    async def tell(self, uid: str, training: str, revoked: dict[str, str], aggregator: SiteRevoker) -> None:
        if not revoked and not self._told.get(uid):
            return
        try:
            dropped = await aggregator.revoke_sites(revoked)
        except AggregatorError as err:  # not up yet: the next pass tells it
            log.warning("sites.revoke_failed", training=training, error=str(err))
            return
        if revoked != self._told.get(uid):
            log.info("sites.revoked", training=training, sites=sorted(revoked), dropped=dropped)
        self._told[uid] = revoked

    def forget(self, uid: str) -> None:
        self._told.pop(uid, None)
