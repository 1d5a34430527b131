"""Admission of a FederatedTraining: the spec's schema and semantics, and the sites it names.

Pure: the FederationSites come from the operator's watch-fed cache, so a check costs no API
request. Every refusal is an `InvalidSpec` whose message names the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from fedfleet.api.load import ManifestError, parse_training
from fedfleet.api.platform import PLATFORM_NAME, ClusterPodTemplateSpec, InvalidPlatform, with_platform
from fedfleet.api.site import FederationSiteSpec
from fedfleet.api.status import SiteRecord
from fedfleet.api.training import FederatedTraining
from fedfleet.controller import resources as res

Object = dict[str, Any]
SITE_DELETED = "its FederationSite was deleted at the hub"
SITE_UNSELECTED = "its FederationSite no longer matches spec.sites.selector"


class InvalidSpec(Exception):
    """The manifest passed the schema but cannot run; reported as Ready=False InvalidSpec."""


def parse(body: Object) -> FederatedTraining:
    try:
        return parse_training({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")}, "spec")
    except ManifestError as err:
        raise InvalidSpec(str(err).replace("spec: spec.", "spec.")) from None


def with_platform_defaults(training: FederatedTraining, platform: Object | None) -> FederatedTraining:
    """The training as its pods are built: its pod settings over the ClusterPodTemplate's. A
    platform default that is not valid, alone or under this training's settings, stops the
    training as InvalidSpec naming it (the pods it would shape are not made without it)."""
    if platform is None:
        return training
    try:
        defaults = ClusterPodTemplateSpec.model_validate(platform)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        said = problem["msg"].removeprefix("Value error, ")
        raise InvalidSpec(f"ClusterPodTemplate {PLATFORM_NAME}: spec.{where}: {said}") from None
    try:
        return with_platform(training, defaults)
    except InvalidPlatform as err:
        raise InvalidSpec(str(err)) from None


def resolve_sites(
    training: FederatedTraining, site_objects: Iterable[Object], ran_on: Sequence[SiteRecord] | None = None
) -> list[res.SiteRef]:
    """The sites the training runs on, in data-partition order: by name, or every site its
    selector matches. `ran_on`: once the training started, the sites it ran on (its status): one
    gone since is not an error but stays in its place, `gone` (its clients are revoked, the
    others keep their data partitions), so one deleted site does not stop a running training."""
    selector = training.spec.sites.selector
    wanted = training.spec.sites.names
    match = dict(selector.match_labels) if selector else {}
    recorded = {r.name: r.namespace for r in ran_on or ()}
    candidates: dict[str, dict[str, res.SiteRef]] = {}  # name -> by the FederationSite's namespace
    existing: set[str] = set()
    for item in site_objects:
        meta = item["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        existing.add(name)
        labels = meta.get("labels") or {}
        if (wanted and name not in wanted) or any(labels.get(k) != v for k, v in match.items()):
            continue
        spec = FederationSiteSpec.model_validate(item.get("spec") or {})
        candidates.setdefault(name, {})[namespace] = res.SiteRef(name, res.pods_namespace(item), spec)
    found = {name: _one_site(name, twins, recorded.get(name)) for name, twins in candidates.items()}
    if ran_on is None:
        missing = [n for n in wanted if n not in found]
        if missing:
            raise InvalidSpec(f"spec.sites.names: no FederationSite named {', '.join(missing)}")
        if not found:
            raise InvalidSpec("spec.sites.selector: matches no FederationSite")
        sites = [found[n] for n in (wanted or sorted(found))]
    else:  # names: every one existed when it started (the spec is frozen since)
        order = dict.fromkeys([*recorded, *(wanted or sorted(found))])
        sites = [
            found.get(n)
            or res.SiteRef(
                n,
                recorded.get(n, ""),
                FederationSiteSpec(),
                SITE_UNSELECTED if n in existing else SITE_DELETED,
            )
            for n in order
        ]
    errors = training.spec.semantic_errors(len(sites))
    errors += [
        f"FederationSite {s.name}: capacity {s.spec.capacity} is below spec.clientsPerSite "
        f"{training.spec.clients_per_site}"
        for s in sites
        if not s.gone and s.spec.capacity < training.spec.clients_per_site
    ]
    if training.spec.release.oci is not None and not training.spec.aggregator.state_volume_size:
        errors.append(
            "spec.release.oci: the operator releases the model from the aggregator's state volume "
            "once the aggregator pod is gone; set spec.aggregator.stateVolumeSize"
        )
    if errors:
        raise InvalidSpec("; ".join(errors))
    return sites


def _one_site(name: str, by_namespace: dict[str, res.SiteRef], ran_in: str | None) -> res.SiteRef:
    """A site's name is its identity in a federation (its clients' certificates, its figures):
    FederationSites of one name in several namespaces are refused, except that a started
    training keeps the one it ran on."""
    if len(by_namespace) == 1:
        return next(iter(by_namespace.values()))
    ran_on = [site for site in by_namespace.values() if site.namespace == ran_in]
    if len(ran_on) == 1:
        return ran_on[0]
    namespaces = sorted(by_namespace)
    shown = ", ".join(namespaces[:5]) + (f" and {len(namespaces) - 5} more" if len(namespaces) > 5 else "")
    raise InvalidSpec(
        f"spec.sites: FederationSites named {name} in namespaces {shown}: a site's name identifies "
        "it in a federation, so it must be unique"
    )
