"""One reconcile pass of a FederatedTraining: observe, decide (core.py), act, record status.

Level-triggered and idempotent: everything it needs to remember lives in the training's
status (client starts, round failures) or in the aggregator's checkpoints (completed rounds),
and every object has a deterministic name, so a restarted operator picks up where it was.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from kubernetes.client.exceptions import ApiException

from fedfleet.api.load import ManifestError, parse_training
from fedfleet.api.site import FederationSiteSpec
from fedfleet.api.training import FederatedTraining, FederatedTrainingSpec
from fedfleet.controller import core, metrics
from fedfleet.controller import resources as res
from fedfleet.controller.certificates import CertificateError, Certificates, fingerprint
from fedfleet.controller.kube import Kube
from fedfleet.controller.status import (
    now_rfc3339,
    released_privacy,
    round_status,
    set_condition,
)
from fedfleet.identity.credentials import channel_credentials, channel_options
from fedfleet.identity.names import server_name
from fedfleet.logs import get_logger
from fedfleet.privacy.release import RoundPrivacy
from fedfleet.provenance.policy import REFUSED_EXIT_CODE
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

Object = dict[str, Any]
EmitEvent = Callable[[Object, str, str, str], Awaitable[None] | None]
ADDRESS_TEMPLATE = os.environ.get("FEDFLEET_AGGREGATOR_ADDRESS", "{service}.{namespace}.svc:{port}")
SCHEDULING_TIMEOUT_SECONDS = float(os.environ.get("FEDFLEET_SCHEDULING_TIMEOUT", "300"))
KIND_OF = {pb.ROUND_KIND_TRAIN: "train", pb.ROUND_KIND_EVALUATE: "evaluate"}
log = get_logger(component="operator")


class InvalidSpec(Exception):
    """The manifest passed the schema but cannot run; reported as Ready=False InvalidSpec."""


@dataclass
class Pass:
    """What one reconcile pass learned and wants written to the training's status."""

    body: Object
    status: Object = field(default_factory=dict)
    done: bool = False

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 1))


def aggregator_address(ref: res.TrainingRef, port: int) -> str:
    return ADDRESS_TEMPLATE.format(service=res.aggregator_name(ref.name), namespace=ref.namespace, port=port)


class TrainingReconciler:
    def __init__(self, kube: Kube, emit: EmitEvent) -> None:
        self.kube = kube
        self._emit = emit
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._retired: list[grpc.aio.Channel] = []
        self.certificates = Certificates(kube)
        self._attributed: dict[tuple[str, str, int], dict[str, float]] = {}  # eval_* copied per round

    async def emit(self, obj: Object, type_: str, reason: str, message: str) -> None:
        result = self._emit(obj, type_, reason, message)
        if result is not None:
            await result

    def control(self, ref: res.TrainingRef, address: str) -> pb_grpc.ControlStub:
        """mTLS as the training's controller identity; a renewed certificate opens a new channel."""
        bundle = self.certificates.controller_bundle(ref)
        key = (address, fingerprint(bundle))
        if key not in self._channels:
            for stale in [k for k in self._channels if k[0] == address]:
                self._retired.append(self._channels.pop(stale))  # its calls may still be running
            self._channels[key] = grpc.aio.secure_channel(
                address,
                channel_credentials(bundle.cert_pem, bundle.key_pem, bundle.ca_pem),
                options=channel_options(server_name(ref.name, ref.namespace)),
            )
        return pb_grpc.ControlStub(self._channels[key])

    async def close(self) -> None:
        for channel in [*self._channels.values(), *self._retired]:
            await channel.close(grace=None)

    # -- the pass ------------------------------------------------------------------------------
    async def reconcile(self, body: Object) -> bool:
        """Returns True when the training has reached a final phase (nothing left to do)."""
        current = body.get("status") or {}
        if current.get("phase") in ("Succeeded", "Failed"):
            return True
        meta = body["metadata"]
        ref = res.TrainingRef(meta["name"], meta["namespace"], meta["uid"])
        step = Pass(body, {"observedGeneration": int(meta.get("generation", 1))})
        try:
            training = self._parse(body)
            sites = await self._sites(training)
            try:
                await self.certificates.ensure(ref, training.spec, sites)  # before any pod mounts them
            except CertificateError as err:
                raise InvalidSpec(str(err)) from None
            await self._ensure_aggregator(ref, training, sites)
            live = await self._ensure_clients(ref, training, sites, step)
            await self._drive_rounds(ref, training, live, step)
        except InvalidSpec as err:
            await self._invalid(step, str(err))
        await self._write_status(ref, step)
        return step.done

    def _parse(self, body: Object) -> FederatedTraining:
        try:
            training = parse_training(
                {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")}, "spec"
            )
        except ManifestError as err:
            raise InvalidSpec(str(err).replace("spec: spec.", "spec.")) from None
        return training

    async def _sites(self, training: FederatedTraining) -> list[res.SiteRef]:
        selector = training.spec.sites.selector
        wanted = training.spec.sites.names
        query = ",".join(f"{k}={v}" for k, v in selector.match_labels.items()) if selector else ""
        found: dict[str, res.SiteRef] = {}
        for item in await self.kube.list("FederationSite", None, query):
            name, namespace = item["metadata"]["name"], item["metadata"]["namespace"]
            if wanted and name not in wanted:
                continue
            spec = FederationSiteSpec.model_validate(item.get("spec") or {})
            found[name] = res.SiteRef(name, spec.namespace or namespace, spec)
        missing = [n for n in wanted if n not in found]
        if missing:
            raise InvalidSpec(f"spec.sites.names: no FederationSite named {', '.join(missing)}")
        if not found:
            raise InvalidSpec("spec.sites.selector: matches no FederationSite")
        sites = [found[n] for n in (wanted or sorted(found))]
        errors = training.spec.semantic_errors(len(sites))
        errors += [
            f"FederationSite {s.name}: capacity {s.spec.capacity} is below spec.clientsPerSite "
            f"{training.spec.clients_per_site}"
            for s in sites
            if s.spec.capacity < training.spec.clients_per_site
        ]
        if errors:
            raise InvalidSpec("; ".join(errors))
        return sites

    async def _invalid(self, step: Pass, message: str) -> None:
        conditions = (step.body.get("status") or {}).get("conditions", [])
        already = any(
            c["type"] == "Ready" and c.get("reason") == "InvalidSpec" and c.get("message") == message
            for c in conditions
        )
        step.status |= {
            "phase": "Pending",
            "message": message,
            "conditions": set_condition(
                set_condition(conditions, "Ready", False, "InvalidSpec", message, step.generation),
                "Progressing",
                False,
                "InvalidSpec",
                "nothing is scheduled until the spec is fixed",
                step.generation,
            ),
        }
        if not already:
            log.warning("training.invalid", training=step.body["metadata"]["name"], reason=message)
            await self.emit(step.body, "Warning", "InvalidSpec", message)

    # -- objects ---------------------------------------------------------------------------------
    async def _ensure_aggregator(
        self, ref: res.TrainingRef, training: FederatedTraining, sites: list[res.SiteRef]
    ) -> None:
        manifest = training.model_dump(by_alias=True, mode="json", exclude={"metadata"}) | {
            "metadata": {"name": ref.name, "namespace": ref.namespace}
        }
        for namespace in sorted({ref.namespace, *(s.namespace for s in sites)}):
            await self.kube.create(res.manifest_config_map(ref, manifest, namespace))
        if (claim := res.state_claim(ref, training.spec)) is not None:
            await self.kube.create(claim)
        await self.kube.create(res.aggregator_service(ref, training.spec))
        if (policy := res.aggregator_network_policy(ref, training.spec)) is not None:
            await self.kube.create(policy)
        pod, created = await self.kube.create(res.aggregator_pod(ref, training.spec))
        if created:
            await self.emit(pod, "Normal", "AggregatorCreated", f"aggregator pod {pod['metadata']['name']}")
        elif (pod.get("status") or {}).get("phase") == "Failed":
            await self.kube.delete("Pod", ref.namespace, res.aggregator_name(ref.name))  # recreated next pass

    async def _ensure_clients(
        self, ref: res.TrainingRef, training: FederatedTraining, sites: list[res.SiteRef], step: Pass
    ) -> set[str]:
        """Create missing client pods, restart failed ones with backoff; returns the live client ids."""
        spec = training.spec
        status = step.body.get("status") or {}
        starts: dict[str, int] = dict(status.get("clientStarts") or {})
        refused: dict[str, str] = dict(status.get("refusedClients") or {})
        pods = {
            p["metadata"]["labels"].get(f"{res.GROUP}/client"): p
            for p in await self.kube.list(
                "Pod", None, f"{res.GROUP}/training={ref.name},app.kubernetes.io/component=client"
            )
        }
        address = aggregator_address(ref, spec.aggregator.port)
        live: set[str] = set()
        unschedulable: list[str] = []
        for site_index, site in enumerate(sites):
            for index in range(spec.clients_per_site):
                cid = res.client_id(site.name, index)
                pod = pods.get(cid)
                if pod is not None:  # adopt: a restarted operator trusts the pod's attempt annotation
                    attempt = int(pod["metadata"].get("annotations", {}).get(f"{res.GROUP}/attempt", "1"))
                    starts[cid] = max(starts.get(cid, 0), attempt)
                    phase = (pod.get("status") or {}).get("phase", "Pending")
                    if phase == "Failed" and _exit_code(pod) == REFUSED_EXIT_CODE:
                        await self._refused_client(step, site.name, pod, cid, refused)
                        continue  # the site's policy said no: not restarted, not waited for
                    if phase == "Failed":
                        await self._failed_client(ref, training, pod, cid, starts, step)
                    elif phase == "Pending" and _age(pod) > SCHEDULING_TIMEOUT_SECONDS:
                        unschedulable.append(f"{cid} at site {site.name}")
                    if phase != "Failed" or spec.retry.max_attempts > starts[cid]:
                        live.add(cid)
                    continue
                if starts.get(cid, 0) >= spec.retry.max_attempts:
                    continue  # given up
                partition = site_index * spec.clients_per_site + index
                starts[cid] = starts.get(cid, 0) + 1
                step.status["clientStarts"] = starts  # recorded even if the create below is interrupted
                await self.kube.create(
                    res.client_pod(ref, spec, site, index, partition, address, starts[cid])
                )
                if starts[cid] > 1:
                    metrics.CLIENT_RESTARTS.labels(training=ref.name).inc()
                    await self.emit(
                        step.body,
                        "Normal",
                        "ClientRestarted",
                        f"client {cid} started again (attempt {starts[cid]} of {spec.retry.max_attempts})",
                    )
                live.add(cid)
        step.status["clientStarts"] = starts
        if refused:
            step.status["refusedClients"] = refused
        if unschedulable:
            step.status["message"] = f"cannot schedule for {SCHEDULING_TIMEOUT_SECONDS:.0f}s: " + ", ".join(
                unschedulable
            )
        return live

    async def _refused_client(
        self, step: Pass, site: str, pod: Object, cid: str, refused: dict[str, str]
    ) -> None:
        """A client that refused to train (provenance.policy): its reason becomes its recorded state."""
        if cid in refused:
            return
        refused[cid] = _termination_message(pod) or (
            f"FederationSite {site}: policy.allowedBaseDigests does not allow this training's base model "
            f"(client exited {REFUSED_EXIT_CODE}; its log has the details)"
        )
        log.warning("client.refused", client=cid, site=site, reason=refused[cid])
        await self.emit(step.body, "Warning", "ClientRefused", f"client {cid}: {refused[cid]}")

    async def _failed_client(
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
        exit_code = _exit_code(pod)
        current_round = int((step.body.get("status") or {}).get("currentRound", 0))
        if current_round:
            await self._drop(
                ref, training, current_round, cid, f"client pod failed with exit code {exit_code}"
            )
        if delay is None:
            if not pod["metadata"].get("annotations", {}).get(f"{res.GROUP}/given-up"):
                await self.kube.request(
                    "PATCH",
                    _pod_path(pod),
                    {"metadata": {"annotations": {f"{res.GROUP}/given-up": "true"}}},
                    content_type="application/merge-patch+json",
                )
                await self.emit(
                    step.body,
                    "Warning",
                    "ClientGivenUp",
                    f"client {cid} failed {starts[cid]} times (exit code {exit_code}); not restarted",
                )
            return
        if _age(pod, finished=True) >= delay:
            await self.kube.delete("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])

    async def _drop(
        self, ref: res.TrainingRef, training: FederatedTraining, number: int, cid: str, reason: str
    ) -> None:
        stub = self.control(ref, aggregator_address(ref, training.spec.aggregator.port))
        with contextlib.suppress(grpc.aio.AioRpcError):  # not a participant of that round, or it is over
            await stub.DropClient(pb.DropRequest(round=number, client_id=cid, reason=reason), timeout=5)

    # -- rounds -------------------------------------------------------------------------------
    async def _drive_rounds(
        self, ref: res.TrainingRef, training: FederatedTraining, live: set[str], step: Pass
    ) -> None:
        spec = training.spec
        status = step.body.get("status") or {}
        expected = spec.expected_clients()
        control = self.control(ref, aggregator_address(ref, spec.aggregator.port))
        try:
            agg = await control.GetStatus(pb.StatusRequest(), timeout=3)
        except grpc.aio.AioRpcError:
            step.status |= {
                "phase": "Pending",
                "message": "waiting for the aggregator",
                "clientsReady": f"0/{expected}",
                "expectedClients": expected,
                "roundProgress": f"{status.get('completedRounds', 0)}/{spec.rounds}",
            }
            self._progressing(step, "WaitingForAggregator", "the aggregator is starting")
            return
        failures = {int(k): int(v) for k, v in (status.get("roundFailures") or {}).items()}
        evaluated = bool(status.get("evaluated"))
        history = list(agg.history)
        released = released_privacy(history)
        if agg.HasField("current"):
            so_far = released_privacy(h for h in history if h.round <= agg.current.round)
            epsilon = self._epsilon(spec, so_far, expected)
            evaluated = await self._record_round(ref, agg.current, step, failures, epsilon) or evaluated
        await self._attach_evaluations(ref, history)
        waiting_since = float(status.get("waitingSince") or time.time())
        current = None
        if agg.HasField("current"):
            c = agg.current
            current = core.RoundView(
                c.round, KIND_OF.get(c.kind, "train"), round_status(c, 0)["phase"], c.reason
            )
        observation = core.Observation(
            model_version=agg.model_version,
            ready_clients=tuple(c for c in agg.ready_clients if c in live),
            live_clients=len(live),
            current=current,
            evaluated=evaluated,
            round_failures=failures,
            last_failure=str(status.get("lastFailure", "")),
            waiting_seconds=time.time() - waiting_since,
            released=released,
        )
        action = core.decide(spec, observation, expected)
        step.status |= {
            "phase": "Running",
            "completedRounds": agg.model_version,
            "currentRound": current.number if current and current.phase in core.ACTIVE_PHASES else 0,
            "roundProgress": f"{agg.model_version}/{spec.rounds}",
            "clientsReady": f"{len(agg.ready_clients)}/{expected}",
            "expectedClients": expected,
            "modelDigest": agg.model_digest,
            "lineageHead": agg.lineage_head,
            "lineagePublicKey": agg.lineage_public_key,
            "lineageKeyFingerprint": agg.lineage_key_fingerprint,
            "roundFailures": {str(k): v for k, v in failures.items()},
            "evaluated": evaluated,
            "message": step.status.get("message", ""),
        }
        if (epsilon := self._epsilon(spec, released, expected)) is not None:
            step.status["epsilon"] = epsilon
        if history:
            step.status["metrics"] = dict(history[-1].metrics)
            if "train_loss" in history[-1].metrics:
                step.status["lastLoss"] = round(history[-1].metrics["train_loss"], 6)
        if isinstance(action, core.StartRound):
            await self._start_round(ref, training, action, control, step, failures)
            step.status["waitingSince"] = None
        elif isinstance(action, core.WaitForClients):
            step.status["waitingSince"] = waiting_since
            self._progressing(step, "WaitingForClients", action.reason)
        elif isinstance(action, core.WatchRound):
            self._progressing(step, "RoundRunning", f"round {action.number} is running")
        elif isinstance(action, core.Finish):
            await control.FinishTraining(pb.FinishRequest(), timeout=5)
            reason = action.reason or "Succeeded"  # PrivacyBudgetExhausted: stopped early, model usable
            step.status |= {
                "phase": "Succeeded",
                "currentRound": 0,
                "message": action.message or f"{agg.model_version} rounds completed",
            }
            step.status["conditions"] = set_condition(
                set_condition(
                    status.get("conditions", []),
                    "Ready",
                    True,
                    reason,
                    step.status["message"],
                    step.generation,
                ),
                "Progressing",
                False,
                reason,
                "training finished",
                step.generation,
            )
            step.done = True
            if action.reason:
                await self.emit(step.body, "Normal", action.reason, step.status["message"])
            await self.emit(step.body, "Normal", "TrainingSucceeded", step.status["message"])
        elif isinstance(action, core.FailTraining):
            await control.FinishTraining(pb.FinishRequest(), timeout=5)
            step.status |= {"phase": "Failed", "currentRound": 0, "message": action.reason}
            step.status["conditions"] = set_condition(
                set_condition(
                    status.get("conditions", []),
                    "Failed",
                    True,
                    "RoundsFailed",
                    action.reason,
                    step.generation,
                ),
                "Progressing",
                False,
                "Failed",
                action.reason,
                step.generation,
            )
            step.done = True
            await self.emit(step.body, "Warning", "TrainingFailed", action.reason)

    def _progressing(self, step: Pass, reason: str, message: str) -> None:
        conditions = (step.body.get("status") or {}).get("conditions", [])
        conditions = set_condition(conditions, "Ready", True, "SpecValid", "spec accepted", step.generation)
        step.status["conditions"] = set_condition(
            conditions, "Progressing", True, reason, message, step.generation
        )

    async def _start_round(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        action: core.StartRound,
        control: pb_grpc.ControlStub,
        step: Pass,
        failures: dict[int, int],
    ) -> None:
        name = res.round_name(ref.name, action.number, action.kind)
        attempt = failures.get(action.number, 0) + 1
        deadline = time.time() + action.timeout_seconds
        round_obj: Object = {
            "apiVersion": f"{res.GROUP}/v1alpha1",
            "kind": "FederatedRound",
            "metadata": {
                "name": name,
                "namespace": ref.namespace,
                "labels": res.labels(ref.name, "round", round=str(action.number)),
                "ownerReferences": [ref.owner_reference()],
            },
            "spec": {
                "training": ref.name,
                "round": action.number,
                "kind": action.kind,
                "participants": list(action.participants),
                "minClients": action.min_clients,
                "deadline": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)),
                "attempt": attempt,
            },
        }
        existing, created = await self.kube.create(round_obj)
        if not created and existing["spec"].get("attempt") != attempt:  # a retried round: replace its record
            await self.kube.delete("FederatedRound", ref.namespace, name)
            existing, _ = await self.kube.create(round_obj)
        await self.kube.patch_status(
            "FederatedRound",
            ref.namespace,
            name,
            {
                "phase": "Scheduling",
                "expected": len(action.participants),
                "reported": 0,
                "dropped": 0,
                "retries": attempt - 1,
                "startTime": now_rfc3339(),
            },
        )
        kind = pb.ROUND_KIND_TRAIN if action.kind == "train" else pb.ROUND_KIND_EVALUATE
        state = await control.StartRound(
            pb.StartRoundRequest(
                round=action.number,
                kind=kind,
                participants=list(action.participants),
                timeout_seconds=action.timeout_seconds,
                min_clients=action.min_clients,
            ),
            timeout=10,
        )
        await self.kube.patch_status("FederatedRound", ref.namespace, name, round_status(state, attempt - 1))
        step.status["currentRound"] = action.number
        self._progressing(step, "RoundRunning", f"round {action.number} started")
        log.info(
            "round.started",
            training=ref.name,
            round=action.number,
            kind=action.kind,
            participants=len(action.participants),
            attempt=attempt,
        )
        await self.emit(
            existing,
            "Normal",
            "RoundStarted",
            f"{action.kind} round {action.number} with {len(action.participants)} clients "
            f"(attempt {attempt})",
        )

    async def _attach_evaluations(self, ref: res.TrainingRef, history: list[pb.RoundState]) -> None:
        """A round's model is evaluated after the round closed (by the next round's clients, or
        the final evaluation), and the aggregator attributes those eval_* to the round that made
        the model: copy them into that round's FederatedRound once they arrive."""
        for state in history[-2:]:
            key = (ref.namespace, ref.name, int(state.round))
            evaluation = {k: v for k, v in state.metrics.items() if k.startswith("eval_")}
            if not evaluation or self._attributed.get(key) == evaluation:
                continue
            name = res.round_name(ref.name, state.round, "train")
            try:
                await self.kube.patch_status("FederatedRound", ref.namespace, name, {"metrics": evaluation})
            except ApiException as err:
                log.warning("round.evaluation_not_recorded", round=name, status=err.status)
                continue
            self._attributed[key] = evaluation

    @staticmethod
    def _epsilon(
        spec: FederatedTrainingSpec, released: tuple[RoundPrivacy, ...], population: int
    ) -> float | None:
        """The training's epsilon after the `released` rounds; None when privacy is off."""
        if not spec.privacy.enabled:
            return None
        from fedfleet.privacy.budget import epsilon_spent  # dp-accounting: only trainings with DP

        value = epsilon_spent(spec.privacy, released, max(1, population))
        return value if math.isfinite(value) else None

    async def _record_round(
        self,
        ref: res.TrainingRef,
        state: pb.RoundState,
        step: Pass,
        failures: dict[int, int],
        epsilon: float | None = None,
    ) -> bool:
        """Copy the aggregator's round into its FederatedRound; count a failure once. Returns
        True when this is the successful final evaluation."""
        kind = KIND_OF.get(state.kind, "train")
        name = res.round_name(ref.name, state.round, kind)
        existing = await self.kube.get("FederatedRound", ref.namespace, name)
        if existing is None:
            return False
        before = (existing.get("status") or {}).get("phase")
        retries = int((existing.get("status") or {}).get("retries", 0))
        status = round_status(state, retries, epsilon if state.HasField("privacy") else None)
        if before in ("Succeeded", "Failed"):
            return kind == "evaluate" and before == "Succeeded"
        try:
            await self.kube.patch_status("FederatedRound", ref.namespace, name, status)
        except ApiException as err:
            log.warning("round.status_failed", round=name, status=err.status)
            return False
        if status["phase"] == "Failed":
            failures[state.round] = failures.get(state.round, 0) + 1
            step.status["lastFailure"] = state.reason
            metrics.ROUNDS.labels(training=ref.name, phase="Failed").inc()
            await self.emit(existing, "Warning", "RoundFailed", f"round {state.round}: {state.reason}")
        elif status["phase"] == "Succeeded":
            metrics.ROUNDS.labels(training=ref.name, phase="Succeeded").inc()
            metrics.ROUND_SECONDS.labels(training=ref.name).observe(
                max(0.0, state.finished_unix - state.started_unix)
            )
            await self.emit(
                existing,
                "Normal",
                "RoundSucceeded",
                f"{kind} round {state.round}: {len(state.reported)}/{len(state.participants)} reported",
            )
            return kind == "evaluate"
        return False

    async def _write_status(self, ref: res.TrainingRef, step: Pass) -> None:
        await self.kube.patch_status("FederatedTraining", ref.namespace, ref.name, step.status)


def _pod_path(pod: Object) -> str:
    return f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"


def _exit_code(pod: Object) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses", []):
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return int(terminated.get("exitCode", 0))
    return None


def _termination_message(pod: Object) -> str:
    for container in (pod.get("status") or {}).get("containerStatuses", []):
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("message"):
            return str(terminated["message"]).strip()
    return ""


def _age(pod: Object, finished: bool = False) -> float:
    stamp = pod["metadata"].get("creationTimestamp")
    if finished:
        for container in (pod.get("status") or {}).get("containerStatuses", []):
            terminated = (container.get("state") or {}).get("terminated") or {}
            stamp = terminated.get("finishedAt") or stamp
    if not stamp:
        return 0.0
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds()
