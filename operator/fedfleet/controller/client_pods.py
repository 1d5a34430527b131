"""A training's client pods: create what is missing, adopt what exists, and decide each failed
pod's fate (refused: never restarted; failed: restarted after backoff; out of attempts: given
up; Pending too long: named as unschedulable). What it returns is the round driver's view of
the fleet (`rounds.ports.FleetState`: live clients, and those down now, which the driver drops
from the round in flight).

The pods come from the watch-fed index (`Observed`), so a pass lists nothing; a pod this
operator just created or deleted is remembered until the index catches up, so a lagging index
never makes it create a pod twice or count a start twice. Its writes go through `PodWriter`
(three calls), so its logic is unit-tested against an in-memory writer.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from typing import Any, Protocol

from fedfleet import vocabulary as vocab
from fedfleet.api.training import FederatedTraining
from fedfleet.controller import core, metrics
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.settings import OperatorSettings
from fedfleet.controller.status_writer import EmitEvent, Pass, as_async
from fedfleet.logs import get_logger
from fedfleet.provenance.policy import REFUSED_EXIT_CODE
from fedfleet.rounds.ports import FleetState

Object = dict[str, Any]
INDEX_LAG_SECONDS = 30.0  # our own create/delete stands in for the index at most this long
log = get_logger(component="operator")


class PodWriter(Protocol):
    """What the client-pod logic writes to the cluster."""

    async def create(self, pod: Object) -> None:
        """Create the pod; one that already exists is no error."""
        ...

    async def mark_given_up(self, namespace: str, name: str) -> None: ...

    async def delete(self, namespace: str, name: str) -> None: ...


class KubePods:
    """`PodWriter` on the Kubernetes API."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def create(self, pod: Object) -> None:
        await self.kube.ensure(pod)

    async def mark_given_up(self, namespace: str, name: str) -> None:
        await self.kube.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            {"metadata": {"annotations": {vocab.ANNOTATION_GIVEN_UP: "true"}}},
            content_type="application/merge-patch+json",
        )

    async def delete(self, namespace: str, name: str) -> None:
        await self.kube.delete("Pod", namespace, name)


class ClientPods:
    def __init__(self, pods: PodWriter, emit: EmitEvent, settings: OperatorSettings) -> None:
        self.writer = pods
        self.emit = as_async(emit)
        self.settings = settings
        self._created: dict[tuple[str, str, str], float] = {}  # (training uid, namespace, name) -> when
        self._deleted: dict[tuple[str, str, str], float] = {}
        self._parked: dict[str, set[str]] = {}  # training uid -> clients a suspend removed

    async def ensure(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        sites: list[res.SiteRef],
        pods: list[Object],
        address: str,
        step: Pass,
    ) -> FleetState:
        """Create missing client pods, restart failed ones with backoff; returns the live client
        ids and the failed ones (down: not running now) with why."""
        spec = training.spec
        book = step.status.controller
        starts = book.client_starts  # edited in place: the pass writes it
        refused = step.status.refused_clients
        by_client = {
            p["metadata"]["labels"].get(vocab.LABEL_CLIENT): p
            for p in pods
            if p["metadata"]["labels"].get(vocab.LABEL_COMPONENT) == vocab.COMPONENT_CLIENT
        }
        self._settle(ref.uid, by_client.values())
        live: set[str] = set()
        down: dict[str, str] = {}
        unschedulable: list[str] = []
        for site_index, site in enumerate(sites):
            if site.gone:  # removed mid-training: its pods go (its clients are revoked, not waited for)
                for cid in res.client_ids(site.name, spec.clients_per_site):
                    await self._remove(ref, by_client.get(cid))
                continue
            for index in range(spec.clients_per_site):
                cid = res.client_id(site.name, index)
                pod = by_client.get(cid)
                if pod is not None and self._recently(self._deleted, ref.uid, pod):
                    live.add(cid)  # deleted for a restart; created again once the index drops it
                    continue
                if pod is not None:  # adopt: a restarted operator trusts the pod's attempt annotation
                    attempt = int(pod["metadata"].get("annotations", {}).get(vocab.ANNOTATION_ATTEMPT, "1"))
                    starts[cid] = max(starts.get(cid, 0), attempt)
                    phase = (pod.get("status") or {}).get("phase", "Pending")
                    if phase == "Failed":
                        down[cid] = f"client pod failed with exit code {exit_code(pod)}"
                    if phase == "Failed" and exit_code(pod) == REFUSED_EXIT_CODE:
                        await self._refused(step, site.name, pod, cid, refused)
                        continue  # the site's policy said no: not restarted, not waited for
                    if phase == "Failed":
                        await self._failed(ref, training, pod, cid, starts, step)
                    elif phase == "Pending" and age(pod) > self.settings.scheduling_timeout_seconds:
                        unschedulable.append(f"{cid} at site {site.name}{_scheduler_says(pod)}")
                    if phase != "Failed" or spec.retry.max_attempts > starts[cid]:
                        live.add(cid)
                    continue
                name = res.client_pod_name(ref.name, cid)
                if (ref.uid, site.namespace, name) in self._created:
                    live.add(cid)  # created moments ago; the index has not shown it yet
                    continue
                parked = self._parked.setdefault(ref.uid, set())
                resumed = cid in book.suspended_clients or cid in parked  # a resume, not a restart
                if resumed and spec.suspend:
                    continue  # removed by the suspend: not started, not waited for
                if starts.get(cid, 0) >= spec.retry.max_attempts and not resumed:
                    continue  # given up
                partition = site_index * spec.clients_per_site + index
                if resumed:
                    parked.discard(cid)
                    if cid in book.suspended_clients:
                        book.suspended_clients.remove(cid)
                else:
                    starts[cid] = starts.get(cid, 0) + 1
                await self.writer.create(
                    res.client_pod(ref, spec, site, index, partition, address, starts[cid])
                )
                self._created[(ref.uid, site.namespace, name)] = time.monotonic()
                if starts[cid] > 1 and not resumed:
                    metrics.CLIENT_RESTARTS.labels(training=ref.name).inc()
                    await self.emit(
                        step.body,
                        "Normal",
                        "ClientRestarted",
                        f"client {cid} started again (attempt {starts[cid]} of {spec.retry.max_attempts})",
                    )
                live.add(cid)
        if unschedulable:
            timeout = self.settings.scheduling_timeout_seconds
            step.status.message = f"cannot schedule for {timeout:.0f}s: " + ", ".join(unschedulable)
        return FleetState(frozenset(live), down)

    def forget(self, ref: res.TrainingRef) -> None:
        self._parked.pop(ref.uid, None)

    async def suspend(self, ref: res.TrainingRef, pods: list[Object], step: Pass) -> None:
        """spec.suspend with no round in flight: remove the client pods that run or wait to run
        (their next start is a resume, not a restart). Failed pods stay: they hold the record of
        a refusal or a client given up, and their restart waits for the resume."""
        book = step.status.controller
        for pod in pods:
            meta = pod["metadata"]
            if meta["labels"].get(vocab.LABEL_COMPONENT) != vocab.COMPONENT_CLIENT:
                continue
            if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in (
                "Failed",
                "Succeeded",
            ):
                continue
            cid = meta["labels"].get(vocab.LABEL_CLIENT, "")
            self._parked.setdefault(ref.uid, set()).add(cid)  # until the status shows the list
            if cid not in book.suspended_clients:
                book.suspended_clients.append(cid)
            await self._remove(ref, pod)

    async def _remove(self, ref: res.TrainingRef, pod: Object | None) -> bool:
        """Delete a pod once (not again while the index still shows it going); True if it did."""
        if (
            pod is None
            or pod["metadata"].get("deletionTimestamp")
            or self._recently(self._deleted, ref.uid, pod)
        ):
            return False
        meta = pod["metadata"]
        await self.writer.delete(meta["namespace"], meta["name"])
        self._deleted[(ref.uid, meta["namespace"], meta["name"])] = time.monotonic()
        return True

    def _recently(self, marks: dict[tuple[str, str, str], float], uid: str, pod: Object) -> bool:
        key = (uid, pod["metadata"]["namespace"], pod["metadata"]["name"])
        when = marks.get(key)
        if when is None:
            return False
        if time.monotonic() - when > INDEX_LAG_SECONDS:
            del marks[key]
            return False
        return True

    def _settle(self, uid: str, seen: Iterable[Object]) -> None:
        """A created pod the index shows, or a deleted one it no longer shows, needs no mark;
        marks older than the lag allowance expire."""
        now = time.monotonic()
        shown = {(uid, p["metadata"]["namespace"], p["metadata"]["name"]) for p in seen}
        for key in [k for k, t in self._created.items() if k in shown or now - t > INDEX_LAG_SECONDS]:
            del self._created[key]
        mine = [k for k in self._deleted if k[0] == uid]
        for key in [k for k in mine if k not in shown or now - self._deleted[k] > INDEX_LAG_SECONDS]:
            del self._deleted[key]  # gone from the index: the next create is a new pod

    async def _refused(self, step: Pass, site: str, pod: Object, cid: str, refused: dict[str, str]) -> None:
        """A client that refused to train (provenance.policy): its reason becomes its recorded state."""
        if cid in refused:
            return
        refused[cid] = termination_message(pod) or (
            f"client at FederationSite {site} refused to run this training as configured "
            f"(exit {REFUSED_EXIT_CODE}, no termination message; its log has the reason)"
        )
        log.warning("client.refused", client=cid, site=site, reason=refused[cid])
        await self.emit(step.body, "Warning", "ClientRefused", f"client {cid}: {refused[cid]}")

    async def _failed(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        pod: Object,
        cid: str,
        starts: dict[str, int],
        step: Pass,
    ) -> None:
        retry = training.spec.retry
        delay = core.restart_delay(retry, starts[cid])
        code = exit_code(pod)
        annotations = pod["metadata"].get("annotations", {})
        if delay is None:
            if not annotations.get(vocab.ANNOTATION_GIVEN_UP):
                await self.writer.mark_given_up(pod["metadata"]["namespace"], pod["metadata"]["name"])
                annotations[vocab.ANNOTATION_GIVEN_UP] = "true"  # until the index shows it
                await self.emit(
                    step.body,
                    "Warning",
                    "ClientGivenUp",
                    f"client {cid} failed {starts[cid]} times (exit code {code}); not restarted",
                )
            return
        if age(pod, finished=True) >= delay and await self._remove(ref, pod):
            await self.emit(  # once per failed pod: it is deleted here, and a new one started
                step.body,
                "Warning",
                "ClientFailed",
                f"client {cid} failed with exit code {code} (attempt {starts[cid]} of {retry.max_attempts})",
            )


def exit_code(pod: Object) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses", []):
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return int(terminated.get("exitCode", 0))
    return None


def termination_message(pod: Object) -> str:
    for container in (pod.get("status") or {}).get("containerStatuses", []):
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("message"):
            return str(terminated["message"]).strip()
    return ""


def age(pod: Object, finished: bool = False) -> float:
    stamp = pod["metadata"].get("creationTimestamp")
    if finished:
        for container in (pod.get("status") or {}).get("containerStatuses", []):
            terminated = (container.get("state") or {}).get("terminated") or {}
            stamp = terminated.get("finishedAt") or stamp
    if not stamp:
        return 0.0
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds()


def _scheduler_says(pod: Object) -> str:
    """Why the scheduler has not placed a pod (its PodScheduled condition), bounded, for status."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = str(condition.get("message") or condition.get("reason") or "")[:300]
            return f" ({reason})" if reason else ""
    return ""
