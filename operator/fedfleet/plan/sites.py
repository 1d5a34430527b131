"""`fedfleet plan --kubeconfig`: whether the cluster's sites can run the manifest, checked with
the operator's own site resolution, then per site: the data claim exists, the nodes have the
GPUs its client pods ask for, its policy allows the base model, and this identity may create
pods there (a SelfSubjectAccessReview; the operator's ServiceAccount is checked by the charts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import urllib3
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from fedfleet.controller.kube import Kube
from fedfleet.controller.resources import SiteRef
from fedfleet.plan.checks import Plan


def check_sites(plan: Plan, kubeconfig: Path) -> None:
    """Adds one line per site to the plan, and an error per thing that would stop the training."""
    kube = Kube(config.new_client_from_config(str(kubeconfig)))
    try:
        asyncio.run(_check(plan, kube))
    except ApiException as err:
        plan.errors.append(f"--kubeconfig {kubeconfig}: the API server answered {err.status} {err.reason}")
    except (urllib3.exceptions.HTTPError, OSError) as err:
        plan.errors.append(f"--kubeconfig {kubeconfig}: cannot reach the API server: {type(err).__name__}")
    finally:
        kube.api.close()


async def _check(plan: Plan, kube: Kube) -> None:
    from fedfleet.controller.spec_checks import InvalidSpec, resolve_sites

    try:  # the operator's resolution: names or selector, any namespace, capacity
        sites = resolve_sites(plan.training, await kube.list("FederationSite"))
    except InvalidSpec as err:
        plan.errors.append(str(err))
        return
    gpus = await _allocatable(kube)
    for site in sites:
        problems, notes = await _site(plan, kube, site, gpus)
        plan.errors += [f"FederationSite {site.name}: {p}" for p in problems]
        verdict = "ok" if not problems else "; ".join(problems)
        plan.site_lines.append(f"{site.name} (namespace {site.namespace}): {'; '.join(notes)}: {verdict}")


async def _allocatable(kube: Kube) -> dict[str, int] | None:
    """Allocatable extended resources summed over the nodes; None when nodes cannot be listed."""
    try:
        nodes = (await kube.request("GET", "/api/v1/nodes")).get("items", [])
    except ApiException:
        return None
    total: dict[str, int] = {}
    for node in nodes:
        for name, value in ((node.get("status") or {}).get("allocatable") or {}).items():
            if str(value).isdigit():
                total[name] = total.get(name, 0) + int(value)
    return total


async def _site(
    plan: Plan, kube: Kube, site: SiteRef, gpus: dict[str, int] | None
) -> tuple[list[str], list[str]]:
    spec, training = site.spec, plan.training.spec
    problems: list[str] = []
    notes: list[str] = []
    claim = spec.data_volume_claim
    if claim:
        found = await kube.get("PersistentVolumeClaim", site.namespace, claim)
        notes.append(f"claim {claim} {'found' if found else 'missing'}")
        if found is None:
            problems.append(f"dataVolumeClaim {claim} does not exist in namespace {site.namespace}")
    if spec.gpu.count:
        needed = spec.gpu.count * training.clients_per_site
        if gpus is None:
            notes.append("GPU capacity not checked (nodes cannot be listed)")
        else:
            have = gpus.get(spec.gpu.resource_name, 0)
            notes.append(f"{spec.gpu.resource_name}: {needed} needed, {have} allocatable")
            if have < needed:
                problems.append(f"{needed} {spec.gpu.resource_name} needed, the nodes have {have}")
    if not spec.allows(training.model.digest):
        problems.append(
            f"policy.allowedBaseDigests does not allow spec.model.digest {training.model.digest or '(none)'}"
        )
    notes.append(await _may_create_pods(kube, site.namespace))
    return problems, notes


async def _may_create_pods(kube: Kube, namespace: str) -> str:
    allowed = await kube.may("create", "pods", namespace)
    if allowed is None:
        return "RBAC not checked (no SelfSubjectAccessReview answer)"
    return "may create pods" if allowed else "may NOT create pods (RBAC)"
