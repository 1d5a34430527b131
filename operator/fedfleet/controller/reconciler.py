"""One reconcile pass of a FederatedTraining: check the spec, make the objects that are
missing, look after the client pods, drive the rounds, write the status if it changed.

Level-triggered and idempotent: what the operator must remember lives in the training's status
(client starts, round failures) or the aggregator's checkpoints (completed rounds), and every
object has a deterministic name, so a restarted operator picks up where it was. A pass reads
the cluster from the watch-fed indices (`Observed`) and writes only what is missing or
changed, so a training that is idle mid-round costs no API request.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from fedfleet import vocabulary as vocab
from fedfleet.api.status import SiteRecord
from fedfleet.api.training import FederatedTraining
from fedfleet.controller import resources as res
from fedfleet.controller.aggregator_link import AggregatorLink
from fedfleet.controller.certificates import CertificateError, Certificates
from fedfleet.controller.client_pods import ClientPods, KubePods
from fedfleet.controller.columns import COLUMN_FIELDS, printed
from fedfleet.controller.ending import Ending
from fedfleet.controller.history import History
from fedfleet.controller.kube import Kube
from fedfleet.controller.observed import Observed
from fedfleet.controller.revocation import Revocations, revoked_sites, without_revoked
from fedfleet.controller.rounds import Rounds
from fedfleet.controller.settings import OperatorSettings
from fedfleet.controller.site_accounts import SiteAccounting
from fedfleet.controller.spec_checks import InvalidSpec, parse, resolve_sites, with_platform_defaults
from fedfleet.controller.status import now_rfc3339, set_condition
from fedfleet.controller.status_writer import EmitEvent, Pass, StatusWriter, as_async
from fedfleet.controller.task_check import task_config_error
from fedfleet.logs import get_logger
from fedfleet.sites.fleet import RemoteSites, SitePods

Object = dict[str, Any]
log = get_logger(component="operator")

__all__ = ["InvalidSpec", "Pass", "TrainingReconciler"]


class TrainingReconciler:
    def __init__(
        self,
        kube: Kube,
        emit: EmitEvent,
        settings: OperatorSettings | None = None,
        wake: Callable[[str], None] | None = None,
        remote: RemoteSites | None = None,
    ) -> None:
        self.kube = kube
        self.remote = remote  # sites in their own clusters, reached through the site gateway
        self.settings = settings or OperatorSettings()
        self.emit = as_async(emit)
        self.certificates = Certificates(kube, self.settings.certificate_check_seconds)
        self.link = AggregatorLink(self.certificates)
        self.writer = StatusWriter(kube)
        local = KubePods(kube)
        self.clients = ClientPods(
            SitePods(local, remote) if remote is not None else local, emit, self.settings
        )
        self.rounds = Rounds(kube, self.writer, emit, wake)
        self._made: set[tuple[str, str, str, str]] = set()  # (training uid, kind, namespace, name)
        self._task_checked: dict[str, tuple[int, str | None]] = {}  # uid -> (generation, error)
        self._ended: dict[str, str] = {}  # uid -> the final phase this operator wrote
        self._told_ended: set[str] = set()  # uids whose end the remote sites were told
        self._restarts_seen: dict[str, int] = {}  # uid -> aggregator restarts already warned about
        self.revocations = Revocations()
        self._removals_told: dict[str, set[str]] = {}  # uid -> sites whose removal was announced
        self.site_accounts = SiteAccounting(kube)
        self.ending = Ending(kube, emit)
        self.history = History(kube, self.writer)

    def address(self, ref: res.TrainingRef, port: int) -> str:
        return self.settings.address(res.aggregator_name(ref.name), ref.namespace, port)

    def interval(self, uid: str) -> float:
        """How long the training's daemon sleeps when nothing wakes it (longer while the
        running round's events wake it)."""
        base = self.settings.reconcile_interval_seconds
        return self.rounds.interval(uid, base, max(base, self.settings.round_watch_interval_seconds))

    async def close(self) -> None:
        await self.rounds.events.close()
        await self.link.close()

    async def forget(self, ref: res.TrainingRef, port: int) -> None:
        """Drop what this operator remembers of a training that ended or went away."""
        await self.link.forget(self.address(ref, port))
        self.writer.forget(ref)
        self.rounds.forget(ref.uid)
        self.clients.forget(ref)
        self._made = {m for m in self._made if m[0] != ref.uid}
        self._task_checked.pop(ref.uid, None)
        self._ended.pop(ref.uid, None)
        self._told_ended.discard(ref.uid)
        self._restarts_seen.pop(ref.uid, None)
        self.revocations.forget(ref.uid)
        self._removals_told.pop(ref.uid, None)
        self.site_accounts.forget(ref.uid)
        self.ending.forget(ref.uid)
        self.history.forget(ref.uid)

    # -- the pass ------------------------------------------------------------------------------
    async def reconcile(self, body: Object, observed: Observed) -> bool:
        """Returns True when the training has ended and what follows its end is done."""
        meta = body["metadata"]
        ref = res.TrainingRef(meta["name"], meta["namespace"], meta["uid"])
        step = Pass(body)
        ended = self._ended.get(ref.uid) or step.current.phase
        if ended in vocab.FINAL_PHASES:  # the watched body may lag our own final write
            if ref.uid not in self._told_ended:
                self.ended(ref)
                self._told_ended.add(ref.uid)
            return await self._settle(ref, str(ended), observed, step)  # the final message stays
        step.status.message = ""  # what this pass finds worth saying
        try:
            training = parse(body)
            ran_on = step.current.controller.sites if step.current.start_time else None
            sites = resolve_sites(training, observed.sites(), ran_on)
            step.status.controller.sites = [SiteRecord(name=s.name, namespace=s.namespace) for s in sites]
            present = [s for s in sites if not s.gone]
            built = with_platform_defaults(training, observed.platform())  # what the pods are made from
            if (error := await self._task_error(ref, step, training)) is not None:  # the costly check last
                raise InvalidSpec(error)
            if not await self._mark_started(ref, step):
                return False  # the spec changed after this pass read it: the next pass acts on it
            try:
                await self.certificates.ensure(ref, training.spec, present)  # before any pod mounts them
            except CertificateError as err:
                raise InvalidSpec(str(err)) from None
            pods = observed.pods(ref.name) + self._remote_pods(ref, training, present, step)
            await self._ensure_aggregator(ref, training, built, present, pods, step)
            address = self.address(ref, training.spec.aggregator.port)
            fleet = await self.clients.ensure(ref, built, sites, pods, address, step)
            aggregator = self.link.aggregator(ref, address, training.spec.expected_clients())
            revoked = revoked_sites(sites)
            await self.revocations.tell(ref.uid, ref.name, revoked, aggregator)
            fleet = without_revoked(fleet, revoked, training.spec.clients_per_site)
            await self._removed_sites(step, sites, training.spec.min_clients)
            driven = await self.rounds.drive(ref, training, aggregator, fleet, step)
            if driven.suspended:
                await self.clients.suspend(ref, pods, step)  # no round in flight
            if driven.view is not None:
                await self.site_accounts.record(ref, observed.sites(), sites, driven.view.sites, step.done)
            progress = (step.status.completed_rounds, step.status.phase)
            await self.history.prune(ref, training.spec.history, progress)
        except InvalidSpec as err:
            await self._invalid(step, str(err))
        except ApiException as err:
            if err.status == 403:  # RBAC said no: the user reads why on the training, not only in our log
                await self._forbidden(ref, step.body, refusal_message(err))
            raise
        step.status.observed_generation = step.generation  # the pass acted on this generation
        for key, value in printed(step.status.dump()).items():
            setattr(step.status, COLUMN_FIELDS[key], value)
        await self.writer.training(ref, step)
        if step.done:  # the next pass removes the aggregator and releases the model
            self._ended[ref.uid] = str(step.status.phase)
            self.rounds.forget(ref.uid)  # no round to follow: pod events wake the daemon now
        return False

    async def _removed_sites(self, step: Pass, sites: list[res.SiteRef], min_clients: int) -> None:
        """Sites gone since the training started: named in status and its message, a Warning
        Event once per site (status remembers which were told across restarts; this operator,
        while the watched body lags its own write)."""
        gone = [s for s in sites if s.gone]
        step.status.removed_sites = [s.name for s in gone]
        told = self._removals_told.setdefault(step.body["metadata"]["uid"], set())
        for site in gone:
            if site.name not in step.current.removed_sites and site.name not in told:
                told.add(site.name)
                await self.emit(
                    step.body,
                    "Warning",
                    "SiteRemoved",
                    f"site {site.name} removed mid-training ({site.gone}): the aggregator refuses its "
                    f"clients and rounds go on with the other sites (minClients {min_clients})",
                )
        if gone:
            said = f"sites removed mid-training, their clients refused: {', '.join(s.name for s in gone)}"
            step.status.message = "; ".join(m for m in (step.status.message, said) if m)

    async def _settle(self, ref: res.TrainingRef, phase: str, observed: Observed, step: Pass) -> bool:
        try:
            training: FederatedTraining | None = parse(step.body)
        except InvalidSpec:
            training = None  # nothing to release; the aggregator pod still goes
        if training is not None:  # the release pod is shaped as the aggregator's was
            with contextlib.suppress(InvalidSpec):  # a platform default broken since: the training's own
                training = with_platform_defaults(training, observed.platform())
        if training is not None:  # the last rounds finished on the pass that ended the training
            ended = (step.current.completed_rounds, phase, "ended")
            await self.history.prune(ref, training.spec.history, ended)
        done = await self.ending.settle(ref, phase, training, observed.pods(ref.name), step)
        await self.writer.training(ref, step)
        return done

    async def _forbidden(self, ref: res.TrainingRef, body: Object, message: str) -> None:
        """Ready=False (Forbidden) naming the refused call, and one Warning Event per refusal.
        Only that is written: the rest of the interrupted pass (a client start counted for a
        pod that was never created) is not."""
        step = Pass(body)
        ready = step.current.condition("Ready")
        if ready is not None and ready.reason == "Forbidden" and ready.message == message:
            return
        step.status.message = message
        step.status.conditions = set_condition(
            step.status.conditions, "Ready", False, "Forbidden", message, step.generation
        )
        if await self.writer.training(ref, step):  # not again while the watched body lags our write
            await self.emit(body, "Warning", "Forbidden", message)

    def ended(self, ref: res.TrainingRef) -> None:
        """The training is over or deleted: remote sites remove its pods and secrets."""
        if self.remote is not None:
            self.remote.forget(ref)

    def _remote_pods(
        self, ref: res.TrainingRef, training: FederatedTraining, sites: list[res.SiteRef], step: Pass
    ) -> list[Object]:
        """What the remote sites report of the training's clients (pod summaries), after giving
        them the training's work; a remote site without a gateway or an external address is an
        InvalidSpec."""
        remote = [s.name for s in sites if s.spec.remote]
        if not remote:
            return []
        if self.remote is None:
            raise InvalidSpec(
                f"FederationSite {remote[0]} is remote (spec.remote) and this operator runs no site "
                "gateway (FEDFLEET_SITE_GATEWAY_PORT)"
            )
        address = training.spec.aggregator.external_address
        if not address:
            raise InvalidSpec(
                f"spec.aggregator.externalAddress: site {remote[0]} runs in its own cluster and needs "
                "an address of the aggregator reachable from outside the hub cluster"
            )

        def sign(site: res.SiteRef, client: str, csr: bytes) -> tuple[bytes, bytes]:
            return self.certificates.sign_client(ref, training.spec, site, client, csr)

        starts = dict(step.current.controller.client_starts)
        return self.remote.observe(ref, training, sites, address, sign, starts)

    async def _mark_started(self, ref: res.TrainingRef, step: Pass) -> bool:
        """Write status.startTime before the first object is made from the spec: from then on the
        CRD refuses edits of what the pods read. The write carries the body's resourceVersion,
        so an edit that landed after this pass read the body wins (409, False) and the next
        pass makes the objects from it, never from the stale spec."""
        if step.current.start_time is not None:
            return True
        step.status.start_time = now_rfc3339()
        try:
            await self.writer.training(ref, step, step.body["metadata"].get("resourceVersion"))
        except ApiException as err:
            if err.status != 409:
                raise
            return False
        return True

    async def _task_error(self, ref: res.TrainingRef, step: Pass, training: FederatedTraining) -> str | None:
        """The task's config check at admission: once per spec generation of a training that is
        not running yet (a running one cannot change its task: the CRD refuses the edit)."""
        if step.current.start_time is not None:
            return None
        checked = self._task_checked.get(ref.uid)
        if checked is None or checked[0] != step.generation:
            error = await task_config_error(training.spec.task)
            checked = self._task_checked[ref.uid] = (step.generation, error)
        return checked[1]

    async def _invalid(self, step: Pass, message: str) -> None:
        ready = step.current.condition("Ready")
        already = ready is not None and ready.reason == "InvalidSpec" and ready.message == message
        step.status.phase, step.status.message = vocab.PENDING, message
        step.status.conditions = set_condition(
            set_condition(step.status.conditions, "Ready", False, "InvalidSpec", message, step.generation),
            "Progressing",
            False,
            "InvalidSpec",
            "nothing is scheduled until the spec is fixed",
            step.generation,
        )
        if not already:
            log.warning("training.invalid", training=step.body["metadata"]["name"], reason=message)
            await self.emit(step.body, "Warning", "InvalidSpec", message)

    # -- objects ---------------------------------------------------------------------------------
    async def _ensure(self, ref: res.TrainingRef, obj: Object) -> None:
        """Create an object this operator has not made (or found) for the training yet."""
        meta = obj["metadata"]
        key = (ref.uid, obj["kind"], meta.get("namespace", ""), meta["name"])
        if key in self._made:
            return
        await self.kube.ensure(obj)
        self._made.add(key)

    async def _ensure_aggregator(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        built: FederatedTraining,
        sites: list[res.SiteRef],
        pods: list[Object],
        step: Pass,
    ) -> None:
        """`built`: the training with the platform's pod defaults under its own (the pods'
        shape); the manifest the pods read is the training's own."""
        manifest = res.training_manifest(ref, training)
        for namespace in sorted({ref.namespace, *(s.namespace for s in sites if not s.spec.remote)}):
            await self._ensure(ref, res.manifest_config_map(ref, manifest, namespace))
        if (claim := res.state_claim(ref, training.spec)) is not None:
            await self._ensure(ref, claim)
        await self._ensure(ref, res.aggregator_service(ref, training.spec))
        if (policy := res.aggregator_network_policy(ref, training.spec)) is not None:
            await self._ensure(ref, policy)
        name = res.aggregator_name(ref.name)
        pod = next(
            (
                p
                for p in pods
                if p["metadata"]["name"] == name and p["metadata"]["namespace"] == ref.namespace
            ),
            None,
        )
        key = (ref.uid, "Pod", ref.namespace, name)
        if pod is None and key not in self._made:
            created = await self.kube.ensure(res.aggregator_pod(ref, built.spec))
            self._made.add(key)  # until the index shows it
            if created is not None:
                await self.emit(created, "Normal", "AggregatorCreated", f"aggregator pod {name}")
        elif pod is not None:
            self._made.discard(key)
            await self._aggregator_restarts(step, pod)
            if (pod.get("status") or {}).get("phase") == "Failed":
                await self.kube.delete("Pod", ref.namespace, name)  # created again once the index drops it
                self._made.add(key)  # until the index drops it: one Warning per failed pod
                step.status.aggregator_restarts = self._restarts_seen[ref.uid] = 0  # a new pod: from 0
                await self.emit(
                    step.body, "Warning", "AggregatorFailed", f"aggregator pod {name} failed; created again"
                )

    async def _aggregator_restarts(self, step: Pass, pod: Object) -> None:
        """A restarted aggregator container (killed, OOM, crashed) is a Warning on the training,
        once per restart: the pod's restart count seen last is in status."""
        uid = step.body["metadata"]["uid"]  # our own last count: the watched body may lag it
        seen = max(step.current.aggregator_restarts, self._restarts_seen.get(uid, 0))
        statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
        restarts = int(statuses[0].get("restartCount", 0))
        step.status.aggregator_restarts = self._restarts_seen[uid] = max(seen, restarts)
        if restarts > seen:
            last = ((statuses[0].get("lastState") or {}).get("terminated") or {}).get("exitCode")
            code = f" (exit code {last})" if last is not None else ""
            await self.emit(
                step.body,
                "Warning",
                "AggregatorRestarted",
                f"aggregator restarted{code}: {restarts} restart(s); the round in progress is retried",
            )


REFUSAL_LIMIT = 400  # characters of the API server's refusal kept in status


def refusal_message(err: ApiException) -> str:
    """The API server's own words for a refused call (it names the user, verb, resource and
    namespace), bounded."""
    try:
        said = str(json.loads(err.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        said = ""
    return f"the operator's request was refused (403): {said or err.reason}"[:REFUSAL_LIMIT]
