"""kopf handlers: thin. They fetch the object, hand it to the reconciler, and post Events.

A daemon per FederatedTraining runs reconcile passes until the training ends; a deletion
handler (kopf's finalizer) removes what owner references cannot reach (client pods, manifests
and client certificate Secrets in other namespaces).
"""

from __future__ import annotations

import os
from typing import Any, cast

import kopf

from fedfleet.controller import metrics
from fedfleet.controller.kube import Kube
from fedfleet.controller.reconciler import TrainingReconciler
from fedfleet.controller.resources import RETAIN_LABEL
from fedfleet.logs import get_logger

GROUP, VERSION = "fedfleet.io", "v1alpha1"
INTERVAL_SECONDS = float(os.environ.get("FEDFLEET_RECONCILE_INTERVAL", "1.0"))
log = get_logger(component="operator")


def _post_event(obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = 20  # INFO: kopf's own handler messages become Events too
    memo.kube = Kube()
    memo.reconciler = TrainingReconciler(memo.kube, _post_event)


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    await memo.reconciler.close()


@kopf.daemon(GROUP, VERSION, "federatedtrainings", cancellation_timeout=10)
async def run_training(
    name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any, **_: Any
) -> None:
    bound = log.bind(training=name, namespace=namespace)
    bound.info("training.watching")
    while not stopped:
        body = await memo.kube.get("FederatedTraining", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            if await memo.reconciler.reconcile(body):
                bound.info("training.done", phase=(body.get("status") or {}).get("phase"))
                return
        except Exception:
            metrics.RECONCILE_ERRORS.labels(training=name).inc()
            bound.exception("reconcile.failed")
        await stopped.wait(INTERVAL_SECONDS)


@kopf.on.delete(GROUP, VERSION, "federatedtrainings")
async def cleanup(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    kube: Kube = memo.kube
    selector = f"{GROUP}/training={name}"
    removed = 0
    namespaces = {namespace or ""}  # and every namespace that ran the training's pods (a manifest each)
    for kind in ("Pod", "ConfigMap"):
        for obj in await kube.list(kind, None, selector):
            namespaces.add(obj["metadata"]["namespace"])
            removed += await kube.delete(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
    for ns in sorted(namespaces - {""}):  # certificates: listed per namespace, never cluster-wide
        for obj in await kube.list("Secret", ns, f"{selector},!{RETAIN_LABEL}"):  # the lineage key stays
            removed += await kube.delete("Secret", ns, obj["metadata"]["name"])
    log.info("training.cleaned_up", training=name, namespace=namespace, objects=removed)


@kopf.on.resume(GROUP, VERSION, "federationsites")
@kopf.on.create(GROUP, VERSION, "federationsites")
@kopf.on.update(GROUP, VERSION, "federationsites")
async def site_status(spec: kopf.Spec, namespace: str | None, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    target = spec.get("namespace") or namespace or ""
    found = await memo.kube.get("Namespace", None, target) if target != namespace else {"ok": True}
    gpus = int((spec.get("gpu") or {}).get("count", 0))
    patch.status["ready"] = found is not None
    patch.status["gpus"] = gpus
    patch.status["message"] = "" if found is not None else f"namespace {target} does not exist"
