"""The operator's round driving: observe the aggregator, ask `core.decide`, act, and record
each round in its FederatedRound (created when it starts, its status copied from the
aggregator only when it changed)."""

from __future__ import annotations

import math
import time
from typing import Any

import grpc
from kubernetes.client.exceptions import ApiException

from fedfleet import convert
from fedfleet import vocabulary as vocab
from fedfleet.api.training import FederatedTraining, FederatedTrainingSpec
from fedfleet.controller import core, metrics
from fedfleet.controller import resources as res
from fedfleet.controller.aggregator_link import AggregatorLink
from fedfleet.controller.kube import Kube
from fedfleet.controller.status import round_status, set_condition
from fedfleet.controller.status_writer import EmitEvent, Pass, StatusWriter
from fedfleet.logs import get_logger
from fedfleet.privacy.release import RoundPrivacy
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

Object = dict[str, Any]
log = get_logger(component="operator")


class Rounds:
    def __init__(self, kube: Kube, link: AggregatorLink, writer: StatusWriter, emit: EmitEvent) -> None:
        self.kube = kube
        self.link = link
        self.writer = writer
        self._emit = emit

    async def emit(self, obj: Object, type_: str, reason: str, message: str) -> None:
        result = self._emit(obj, type_, reason, message)
        if result is not None:
            await result

    async def drive(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        control: pb_grpc.ControlStub,
        live: set[str],
        step: Pass,
    ) -> None:
        spec = training.spec
        status = step.current
        expected = spec.expected_clients()
        try:
            agg = await self.link.status(control)
        except grpc.aio.AioRpcError:
            step.status |= {
                "phase": vocab.PENDING,
                "message": "waiting for the aggregator",
                "clientsReady": f"0/{expected}",
                "expectedClients": expected,
                "roundProgress": f"{status.get('completedRounds', 0)}/{spec.rounds}",
            }
            step.progressing("WaitingForAggregator", "the aggregator is starting")
            return
        failures = {int(k): int(v) for k, v in (status.get("roundFailures") or {}).items()}
        evaluated = bool(status.get("evaluated"))
        history = list(agg.history)
        released = convert.released_privacy(history)
        current: core.RoundView | None = None
        if agg.HasField("current"):
            so_far = convert.released_privacy(h for h in history if h.round <= agg.current.round)
            epsilon = epsilon_after(spec, so_far, expected)
            evaluated = await self._record_round(ref, agg.current, step, failures, epsilon) or evaluated
            current = convert.round_view(agg.current)
        await self._attach_evaluations(ref, history)
        waiting_since = float(status.get("waitingSince") or time.time())
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
            "phase": vocab.RUNNING,
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
        if (epsilon := epsilon_after(spec, released, expected)) is not None:
            step.status["epsilon"] = epsilon
        if history:
            step.status["metrics"] = dict(history[-1].metrics)
            if "train_loss" in history[-1].metrics:
                step.status["lastLoss"] = round(history[-1].metrics["train_loss"], 6)
        if isinstance(action, core.StartRound):
            await self._start_round(ref, action, control, step, failures)
            step.status["waitingSince"] = None
        elif isinstance(action, core.WaitForClients):
            step.status["waitingSince"] = waiting_since
            step.progressing("WaitingForClients", action.reason)
        elif isinstance(action, core.WatchRound):
            step.progressing("RoundRunning", f"round {action.number} is running")
        elif isinstance(action, core.Finish):
            await self.link.finish(control)
            reason = action.reason or vocab.SUCCEEDED  # PrivacyBudgetExhausted: stopped early, model usable
            message = action.message or f"{agg.model_version} rounds completed"
            self._final(step, vocab.SUCCEEDED, "Ready", reason, message, "training finished")
            if action.reason:
                await self.emit(step.body, "Normal", action.reason, message)
            await self.emit(step.body, "Normal", "TrainingSucceeded", message)
        elif isinstance(action, core.FailTraining):
            await self.link.finish(control)
            self._final(step, vocab.FAILED, "Failed", "RoundsFailed", action.reason, action.reason)
            await self.emit(step.body, "Warning", "TrainingFailed", action.reason)

    @staticmethod
    def _final(step: Pass, phase: str, condition: str, reason: str, message: str, progress: str) -> None:
        step.status |= {"phase": phase, "currentRound": 0, "message": message}
        conditions = set_condition(
            step.current.get("conditions", []), condition, True, reason, message, step.generation
        )
        step.status["conditions"] = set_condition(
            conditions,
            "Progressing",
            False,
            reason if phase == vocab.SUCCEEDED else phase,
            progress,
            step.generation,
        )
        step.done = True

    async def _start_round(
        self,
        ref: res.TrainingRef,
        action: core.StartRound,
        control: pb_grpc.ControlStub,
        step: Pass,
        failures: dict[int, int],
    ) -> None:
        name = res.round_name(ref.name, action.number, action.kind)
        attempt = failures.get(action.number, 0) + 1
        deadline = time.time() + action.timeout_seconds
        round_obj: Object = {
            "apiVersion": vocab.API_VERSION,
            "kind": vocab.ROUND,
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
            await self.kube.delete(vocab.ROUND, ref.namespace, name)
            existing, _ = await self.kube.create(round_obj)
        self.writer.round_replaced(existing)
        state = await self.link.start_round(control, action)
        await self.writer.round(ref.namespace, name, round_status(state, attempt - 1))
        step.status["currentRound"] = action.number
        step.progressing("RoundRunning", f"round {action.number} started")
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
        the model: copy them into that round's FederatedRound once they arrive (once)."""
        for state in history[-2:]:
            evaluation = {k: v for k, v in state.metrics.items() if k.startswith("eval_")}
            if not evaluation:
                continue
            name = res.round_name(ref.name, state.round, vocab.TRAIN)
            known = await self.writer.round_known(ref.namespace, name)
            if known is None:
                continue
            metrics = dict(known.get("metrics") or {})
            if all(metrics.get(k) == v for k, v in evaluation.items()):
                continue
            try:
                await self.writer.round(ref.namespace, name, {"metrics": metrics | evaluation})
            except ApiException as err:
                log.warning("round.evaluation_not_recorded", round=name, status=err.status)

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
        kind = convert.round_kind(state.kind)
        name = res.round_name(ref.name, state.round, kind)
        known = await self.writer.round_known(ref.namespace, name)
        if known is None:
            return False
        before = known.get("phase")
        if before in vocab.FINAL_PHASES:
            return kind == vocab.EVALUATE and before == vocab.SUCCEEDED
        retries = int(known.get("retries", 0))
        status = round_status(state, retries, epsilon if state.HasField("privacy") else None)
        try:
            await self.writer.round(ref.namespace, name, status)
        except ApiException as err:
            log.warning("round.status_failed", round=name, status=err.status)
            return False
        involved = self.writer.round_ref(ref.namespace, name)
        if status["phase"] == vocab.FAILED:
            failures[state.round] = failures.get(state.round, 0) + 1
            step.status["lastFailure"] = state.reason
            metrics.ROUNDS.labels(training=ref.name, phase=vocab.FAILED).inc()
            await self.emit(involved, "Warning", "RoundFailed", f"round {state.round}: {state.reason}")
        elif status["phase"] == vocab.SUCCEEDED:
            metrics.ROUNDS.labels(training=ref.name, phase=vocab.SUCCEEDED).inc()
            metrics.ROUND_SECONDS.labels(training=ref.name).observe(
                max(0.0, state.finished_unix - state.started_unix)
            )
            await self.emit(
                involved,
                "Normal",
                "RoundSucceeded",
                f"{kind} round {state.round}: {len(state.reported)}/{len(state.participants)} reported",
            )
            return kind == vocab.EVALUATE
        return False


def epsilon_after(
    spec: FederatedTrainingSpec, released: tuple[RoundPrivacy, ...], population: int
) -> float | None:
    """The training's epsilon after the `released` rounds; None when privacy is off."""
    if not spec.privacy.enabled:
        return None
    from fedfleet.privacy.budget import epsilon_spent  # dp-accounting: only trainings with DP

    value = epsilon_spent(spec.privacy, released, max(1, population))
    return value if math.isfinite(value) else None
