"""kopf handlers: thin. Indices keep the trainings' pods and the FederationSites in memory from
kopf's watches; a daemon per FederatedTraining hands its watch-fed body and those indices to
the reconciler; a deletion handler (kopf's finalizer) removes what owner references cannot
reach (client pods, manifests and client certificate Secrets in other namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, cast

import kopf
from pydantic import ValidationError

from fedfleet import vocabulary as vocab
from fedfleet.api.status import ControllerState
from fedfleet.controller import metrics
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.observed import SITES_KEY, IndexedObserved, Object, pod_summary, site_summary
from fedfleet.controller.reconciler import TrainingReconciler
from fedfleet.controller.resources import RETAIN_LABEL
from fedfleet.controller.settings import OperatorSettings
from fedfleet.controller.site_status import outdated, recheck_sites, site_readiness
from fedfleet.controller.spec_checks import InvalidSpec, parse, resolve_sites
from fedfleet.logs import get_logger
from fedfleet.sites.fleet import RemoteSites
from fedfleet.sites.gateway import GatewaySettings, SiteGateway, load_or_create_ca
from fedfleet.sites.gateway import serve as serve_gateway

GROUP, VERSION = vocab.GROUP, vocab.VERSION
log = get_logger(component="operator")


def _post_event(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    settings.persistence.finalizer = vocab.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = 20  # INFO: kopf's own handler messages become Events too
    memo.settings = OperatorSettings.from_env(os.environ)
    memo.kube = Kube()
    memo.wake = {}  # training name -> asyncio.Event its daemon sleeps on
    memo.remote = RemoteSites(lambda training: _wake(memo, training))
    memo.gateway = memo.gateway_server = None
    if memo.settings.site_gateway_port:  # sites in their own clusters dial in here
        ca = await load_or_create_ca(memo.kube, memo.settings.namespace)
        checks = GatewaySettings(orphan_check_seconds=memo.settings.site_orphan_check_seconds)
        memo.gateway = SiteGateway(memo.kube, memo.remote, ca, checks)
        port = memo.settings.site_gateway_port
        memo.gateway_server = await serve_gateway(
            memo.gateway,
            port,
            memo.settings.site_gateway_enrol_port or port + 1,
            memo.settings.site_gateway_names,
        )
    memo.reconciler = TrainingReconciler(
        memo.kube,
        _post_event,
        memo.settings,
        wake=lambda training: _wake(memo, training),
        remote=memo.remote if memo.gateway else None,
    )
    sites = IndexedObserved({}, kwargs["federation_sites"], {}).sites  # kopf's live index, filled later
    memo.site_checks = asyncio.create_task(recheck_sites(memo.kube, sites, memo.settings.site_check_seconds))


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    memo.site_checks.cancel()
    await memo.reconciler.close()
    if memo.gateway_server is not None:
        await memo.gateway_server.stop(2)


def _wake(memo: Any, training: str | None) -> None:
    event = (getattr(memo, "wake", None) or {}).get(training)
    if event is not None:
        event.set()


@kopf.index("pods", labels={vocab.LABEL_TRAINING: kopf.PRESENT})
def training_pods(body: kopf.Body, labels: kopf.Labels, memo: Any, **_: Any) -> dict[str, Object]:
    """The trainings' pods, by training name; a change wakes the training's daemon."""
    training = labels[vocab.LABEL_TRAINING]
    _wake(memo, training)
    return {training: pod_summary(body)}


@kopf.index(GROUP, VERSION, "federationsites")
def federation_sites(body: kopf.Body, **_: Any) -> dict[str, Object]:
    return {SITES_KEY: site_summary(body)}


@kopf.index(GROUP, VERSION, "clusterpodtemplates")
def platform_templates(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Object]:
    """The platform's pod defaults (cluster-scoped; watched whatever namespaces the operator
    serves), read by every pass that builds a pod."""
    return {name: dict(spec)}


@kopf.daemon(GROUP, VERSION, "federatedtrainings", cancellation_timeout=10)
async def run_training(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **kwargs: Any,
) -> None:
    bound = log.bind(training=name, namespace=namespace)
    bound.info("training.watching")
    # kopf passes each index as the keyword named after its function
    observed = IndexedObserved(
        kwargs["training_pods"], kwargs["federation_sites"], kwargs["platform_templates"]
    )
    reconciler: TrainingReconciler = memo.reconciler
    wake = memo.wake.setdefault(name, asyncio.Event())
    uid = str((body.get("metadata") or {}).get("uid", ""))
    try:
        while not stopped:
            current = dict(body)  # kopf keeps the daemon's body current from its watch
            if current["metadata"].get("deletionTimestamp"):
                return
            wake.clear()
            try:
                if await reconciler.reconcile(current, observed):
                    bound.info("training.done", phase=(current.get("status") or {}).get("phase"))
                    return
            except Exception:
                metrics.RECONCILE_ERRORS.labels(training=name).inc()
                bound.exception("reconcile.failed")
            await _sleep(wake, stopped, reconciler.interval(uid))
    finally:
        memo.wake.pop(name, None)
        spec = dict(body.get("spec") or {})
        port = int((spec.get("aggregator") or {}).get("port", 50051))
        meta = body.get("metadata") or {}
        await reconciler.forget(res.TrainingRef(name, namespace or "", str(meta.get("uid", ""))), port)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Until a pod of the training or its running round changes, the daemon stops, or
    `seconds` pass."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait(seconds))]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.event(GROUP, VERSION, "federatedtrainings")
def training_changed(name: str, memo: Any, **_: Any) -> None:
    """A spec edit or a status write wakes the training's daemon at once."""
    _wake(memo, name)


@kopf.on.delete(GROUP, VERSION, "federatedtrainings")
async def cleanup(
    name: str, namespace: str | None, body: kopf.Body, spec: kopf.Spec, memo: Any, **kwargs: Any
) -> None:
    """What owner references cannot reach: client pods, manifests and certificates in the sites'
    namespaces. Listed namespace by namespace (the training's, its sites', and any where the pod
    index shows one of its pods), never across the cluster, so a namespaced install needs no
    cluster-wide read. The state volume and the lineage key are not owned (the garbage collector
    keeps them): removed only when `spec.retention` says Delete."""
    meta = body.get("metadata") or {}  # remote sites remove theirs when told the training ended
    memo.reconciler.ended(res.TrainingRef(name, namespace or "", str(meta.get("uid", ""))))
    kube: Kube = memo.kube
    observed = IndexedObserved(
        kwargs["training_pods"], kwargs["federation_sites"], kwargs["platform_templates"]
    )
    namespaces = {namespace or ""} | {p["metadata"]["namespace"] for p in observed.pods(name)}
    with contextlib.suppress(ValidationError):  # a status not ours must not hold the finalizer
        recorded = ControllerState.model_validate((body.get("status") or {}).get("controller") or {})
        namespaces |= {r.namespace for r in recorded.sites}  # a site deleted mid-training left Secrets
    try:
        namespaces |= {s.namespace for s in resolve_sites(parse(dict(body)), observed.sites())}
    except InvalidSpec:  # a site gone or changed since: look wherever a site is
        namespaces |= {
            (s.get("spec") or {}).get("namespace") or s["metadata"]["namespace"] for s in observed.sites()
        }
    selector = f"{vocab.LABEL_TRAINING}={name}"
    removed = 0
    for ns in sorted(namespaces - {""}):
        for kind, kept in (("Pod", ""), ("ConfigMap", ""), ("Secret", f",!{RETAIN_LABEL}")):
            for obj in await kube.list(kind, ns, selector + kept):  # the lineage key stays
                removed += await kube.delete(kind, ns, obj["metadata"]["name"])
    retention = dict(spec.get("retention") or {})
    if namespace and retention.get("stateVolume") == "Delete":
        removed += await kube.delete("PersistentVolumeClaim", namespace, res.state_claim_name(name))
    if namespace and retention.get("lineageKey") == "Delete":
        removed += await kube.delete("Secret", namespace, res.lineage_secret_name(name))
    log.info("training.cleaned_up", training=name, namespace=namespace, objects=removed)


@kopf.on.resume(GROUP, VERSION, "federationsites")
@kopf.on.create(GROUP, VERSION, "federationsites")
@kopf.on.update(GROUP, VERSION, "federationsites")
async def site_status(
    spec: kopf.Spec, status: kopf.Status, namespace: str | None, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """READY as `site_readiness` decides, at once on a change (`recheck_sites` re-checks later,
    since a claim made after the site changes nothing on the site itself). Written only when it
    changed. A remote site's connection fields are the site gateway's."""
    wanted = await site_readiness(memo.kube, dict(spec), namespace or "")
    if outdated(status, wanted):
        patch.status.update(wanted)


@kopf.on.event(GROUP, VERSION, "federationsites")
def site_changed(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """A remote site deleted or suspended at the hub loses its stream within a second, and the
    trainings' next passes (woken now) tell their aggregators to refuse its clients."""
    gateway: SiteGateway | None = getattr(memo, "gateway", None)
    if gateway is not None:
        gateway.site_event(dict(body), deleted=type == "DELETED")
    if (body.get("spec") or {}).get("suspended") or type == "DELETED":
        for wake in (getattr(memo, "wake", None) or {}).values():
            wake.set()
