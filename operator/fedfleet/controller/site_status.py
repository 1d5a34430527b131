"""A FederationSite's READY: its client pods could start there now. The namespace they run in
exists and so does the data claim they mount; a site that fails either shows READY false with
the reason, before any training waits on pods stuck in ContainerCreating."""

from __future__ import annotations

from typing import Any

from fedfleet.controller.kube import Kube

Object = dict[str, Any]
SITE_CHECK_SECONDS = 60.0


async def site_readiness(kube: Kube, spec: Object, namespace: str) -> Object:
    """`status` fields for a site with `spec`, declared in `namespace`."""
    target = str(spec.get("namespace") or namespace)
    gpus = int((spec.get("gpu") or {}).get("count", 0))
    problem = ""
    if target != namespace and await kube.get("Namespace", None, target) is None:
        problem = f"namespace {target} does not exist"
    elif (claim := spec.get("dataVolumeClaim")) and await kube.get(
        "PersistentVolumeClaim", target, str(claim)
    ) is None:
        problem = f"data claim {claim} does not exist in namespace {target}: client pods could not start"
    return {"ready": not problem, "gpus": gpus, "message": problem}
