"""A FederationSite's READY: its client pods could start there now. The namespace they run in
exists, so does the data claim they mount, and the operator may create pods there (a
SelfSubjectAccessReview, as the operator's own identity: a site namespace without the site
chart's Role under a namespaced hub); a site that fails any shows READY false with the reason,
before a training waits on pods that are never made or stuck in ContainerCreating."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from fedfleet.controller.kube import Kube
from fedfleet.logs import get_logger

Object = dict[str, Any]
log = get_logger(component="operator")


async def site_readiness(kube: Kube, spec: Object, namespace: str) -> Object:
    """`status` fields for a site with `spec`, declared in `namespace`. A remote site (its own
    cluster) is ready unless suspended; the site gateway writes its connection fields."""
    gpus = int((spec.get("gpu") or {}).get("count", 0))
    if spec.get("remote"):
        suspended = bool(spec.get("suspended"))
        return {
            "ready": not suspended,
            "gpus": gpus,
            "message": "suspended" if suspended else "runs in its own cluster",
        }
    target = str(spec.get("namespace") or namespace)
    problem = ""
    if target != namespace and await kube.get("Namespace", None, target) is None:
        problem = f"namespace {target} does not exist"
    elif (claim := spec.get("dataVolumeClaim")) and await kube.get(
        "PersistentVolumeClaim", target, str(claim)
    ) is None:
        problem = f"data claim {claim} does not exist in namespace {target}: client pods could not start"
    elif await kube.may("create", "pods", target) is False:  # None: the API server cannot say
        problem = (
            f"the operator may not create pods in namespace {target} (RBAC): install the site chart "
            "there, or list the namespace in the hub chart's namespaces"
        )
    return {"ready": not problem, "gpus": gpus, "message": problem}


def outdated(status: Mapping[str, Any], wanted: Object) -> bool:
    """Whether `status` differs from the `wanted` readiness fields (written only when it does)."""
    return any(status.get(k) != v for k, v in wanted.items())


async def recheck_sites(kube: Kube, sites: Callable[[], Iterable[Object]], interval: float) -> None:
    """Re-check every site each `interval` seconds: a claim made or lost after the site changes
    nothing on the site itself (a remote site costs no request). A loop of the operator's, not a
    kopf timer, because a timer puts kopf's finalizer on every site, and a site uninstalled while
    the hub operator is down would then never go away."""
    while True:
        await asyncio.sleep(interval)
        for site in list(sites()):
            spec, name, namespace = (
                site.get("spec") or {},
                str(site["metadata"]["name"]),
                str(site["metadata"]["namespace"]),
            )
            try:
                wanted = await site_readiness(kube, spec, namespace)
                if outdated(site.get("status") or {}, wanted):
                    await kube.patch_status("FederationSite", namespace, name, wanted)
            except ApiException as err:  # gone meanwhile, or not allowed: the next pass tries again
                if err.status != 404:
                    log.warning(
                        "site.check_failed", site=name, status=err.status, reason=str(err.reason)[:200]
                    )
