"""The operator's side of the round driver (`fedfleet.rounds.driver`): its Kubernetes adapters.

`KubeRecorder` records rounds as FederatedRound objects (created when a round starts, replaced
when it is retried, status copied from the aggregator only when it changed), Events and
Prometheus metrics, and the training's progress in the pass's status fragment. `Rounds.drive`
runs one driver step per reconcile pass with the bookkeeping the training's status keeps, and
follows a running round's events (`round_events.py`) so the daemon need not poll meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from kubernetes.client.exceptions import ApiException

from fedfleet import vocabulary as vocab
from fedfleet.api.training import FederatedTraining, FederatedTrainingSpec
from fedfleet.controller import core, metrics
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.round_events import RoundEvents
from fedfleet.controller.status import round_status, set_condition
from fedfleet.controller.status_writer import EmitEvent, Pass, StatusWriter, as_async
from fedfleet.logs import get_logger
from fedfleet.rounds.driver import Bookkeeping, RoundDriver, Unreachable
from fedfleet.rounds.ports import AggregatorView, FleetState, RoundSnapshot, WatchableAggregator

Object = dict[str, Any]
SUSPENDED = "Suspended"  # the condition's type
log = get_logger(component="operator")


@dataclass(frozen=True)
class KnownFleet:
    """The fleet port over what this pass's client-pod logic found."""

    state: FleetState

    async def observe(self) -> FleetState:
        return self.state


class Driven(NamedTuple):
    suspended: bool  # with no round in flight: the client pods may go
    view: AggregatorView | None  # the aggregator's status the step read; None: unreachable


class KubeRecorder:
    """The round recorder on a cluster, for one training and one pass."""

    def __init__(
        self,
        kube: Kube,
        writer: StatusWriter,
        emit: EmitEvent,
        ref: res.TrainingRef,
        spec: FederatedTrainingSpec,
        step: Pass,
        announced: dict[str, str],
    ) -> None:
        self.kube = kube
        self.writer = writer
        self.emit = as_async(emit)
        self.ref = ref
        self.spec = spec
        self.step = step
        self.announced = announced  # training uid -> the last suspension change announced

    def _name(self, number: int, kind: str) -> str:
        return res.round_name(self.ref.name, number, kind)

    async def recorded(self, number: int, kind: vocab.RoundKind) -> str | None:
        known = await self.writer.round_known(self.ref.namespace, self._name(number, kind))
        if known is None:
            return None
        return known.phase if "phase" in known.model_fields_set else ""  # "": no state written yet

    async def round_started(self, start: core.StartRound, attempt: int) -> None:
        ref = self.ref
        name = self._name(start.number, start.kind)
        deadline = time.time() + start.timeout_seconds
        round_obj: Object = {
            "apiVersion": vocab.API_VERSION,
            "kind": vocab.ROUND,
            "metadata": {
                "name": name,
                "namespace": ref.namespace,
                "labels": res.labels(ref.name, "round", round=str(start.number)),
                "ownerReferences": [ref.owner_reference()],
            },
            "spec": {
                "training": ref.name,
                "round": start.number,
                "kind": start.kind,
                "participants": list(start.participants),
                "minClients": start.min_clients,
                "deadline": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)),
                "attempt": attempt,
            },
        }
        existing, created = await self.kube.create(round_obj)
        rerun = (existing.get("status") or {}).get("phase") in vocab.FINAL_PHASES  # aborted, or re-evaluated
        if not created and (existing["spec"].get("attempt") != attempt or rerun):  # replace the record
            await self.kube.delete(vocab.ROUND, ref.namespace, name)
            existing, _ = await self.kube.create(round_obj)
        self.writer.round_replaced(existing)
        self.step.status.current_round = start.number
        self.step.progressing("RoundRunning", f"round {start.number} started")
        log.info(
            "round.started",
            training=ref.name,
            round=start.number,
            kind=start.kind,
            participants=len(start.participants),
            attempt=attempt,
        )
        await self.emit(
            existing,
            "Normal",
            "RoundStarted",
            f"{start.kind} round {start.number} with {len(start.participants)} clients (attempt {attempt})",
        )

    async def round_changed(self, state: RoundSnapshot, attempt: int, epsilon: float | None) -> None:
        name = self._name(state.number, state.kind)
        try:
            await self.writer.round(self.ref.namespace, name, round_status(state, attempt - 1, epsilon))
        except ApiException as err:
            log.warning("round.status_failed", round=name, status=err.status)
            if err.status == 404:  # deleted: the next pass finds no record and adopts the round
                self.writer.round_gone(self.ref.namespace, name)
            raise

    async def round_failed(self, state: RoundSnapshot, attempt: int) -> None:
        metrics.ROUNDS.labels(training=self.ref.name, phase=vocab.FAILED).inc()
        involved = self.writer.round_ref(self.ref.namespace, self._name(state.number, state.kind))
        await self.emit(involved, "Warning", "RoundFailed", f"round {state.number}: {state.reason}")

    async def round_succeeded(self, state: RoundSnapshot) -> None:
        metrics.ROUNDS.labels(training=self.ref.name, phase=vocab.SUCCEEDED).inc()
        metrics.ROUND_SECONDS.labels(training=self.ref.name).observe(
            max(0.0, state.finished_unix - state.started_unix)
        )
        involved = self.writer.round_ref(self.ref.namespace, self._name(state.number, state.kind))
        await self.emit(
            involved,
            "Normal",
            "RoundSucceeded",
            f"{state.kind} round {state.number}: {len(state.reported)}/{len(state.participants)} reported",
        )

    async def evaluation_attached(self, number: int, evaluation: Mapping[str, float]) -> None:
        """Copied into the training round's FederatedRound once they arrive (once)."""
        name = self._name(number, vocab.TRAIN)
        known = await self.writer.round_known(self.ref.namespace, name)
        if known is None:
            return
        if all(known.metrics.get(k) == v for k, v in evaluation.items()):
            return
        try:
            await self.writer.round(
                self.ref.namespace,
                name,
                known.model_copy(update={"metrics": known.metrics | dict(evaluation)}),
            )
        except ApiException as err:
            log.warning("round.evaluation_not_recorded", round=name, status=err.status)

    async def training_progress(self, view: AggregatorView, epsilon: float | None) -> None:
        spec, out = self.spec, self.step.status
        expected = spec.expected_clients()
        current = view.current
        out.phase = vocab.RUNNING
        out.completed_rounds = view.model_version
        out.current_round = current.number if current is not None and current.active else 0
        out.round_progress = f"{view.model_version}/{spec.rounds}"
        out.clients_ready = f"{len(view.ready_clients)}/{expected}"
        out.expected_clients = expected
        out.model_digest = view.model_digest
        out.lineage_head = view.lineage_head
        out.lineage_public_key = view.lineage_public_key
        out.lineage_key_fingerprint = view.lineage_key_fingerprint
        if epsilon is not None:
            out.epsilon = epsilon
        if view.recent:
            last = view.recent[-1].metrics
            out.metrics = dict(last)
            if "train_loss" in last:
                out.last_loss = round(last["train_loss"], 6)

    async def training_finished(self, finish: core.Finish, view: AggregatorView) -> None:
        reason = finish.reason or vocab.SUCCEEDED  # PrivacyBudgetExhausted: stopped early, model usable
        message = finish.message or f"{view.model_version} rounds completed"
        self._final(vocab.SUCCEEDED, "Ready", reason, message, "training finished")
        if finish.reason:
            await self.emit(self.step.body, "Normal", finish.reason, message)
        await self.emit(self.step.body, "Normal", "TrainingSucceeded", message)

    async def training_failed(self, reason: str) -> None:
        self._final(vocab.FAILED, "Failed", "RoundsFailed", reason, reason)
        await self.emit(self.step.body, "Warning", "TrainingFailed", reason)

    async def round_aborted(self, state: RoundSnapshot) -> None:
        involved = self.writer.round_ref(self.ref.namespace, self._name(state.number, state.kind))
        await self.emit(involved, "Normal", "RoundAborted", f"round {state.number}: {state.reason}")

    async def training_suspended(self, view: AggregatorView) -> None:
        """No round in flight: phase Suspended, announced once (the body may lag our write)."""
        step, out = self.step, self.step.status
        message = (
            f"suspended after round {view.model_version} of {self.spec.rounds}; spec.suspend: false resumes"
        )
        out.phase, out.current_round = vocab.SUSPENDED, 0
        out.conditions = set_condition(out.conditions, SUSPENDED, True, "Suspended", message, step.generation)
        out.conditions = set_condition(
            out.conditions, "Progressing", False, "Suspended", message, step.generation
        )
        before = step.current.condition(SUSPENDED)
        if (before is None or before.status != "True") and self.announce("Suspended"):
            await self.emit(step.body, "Normal", "TrainingSuspended", message)

    def announce(self, change: str) -> bool:
        """True the first time this operator sees the training's suspension change this way."""
        if self.announced.get(self.ref.uid) == change:
            return False
        self.announced[self.ref.uid] = change
        return True

    def _final(
        self, phase: vocab.TrainingPhase, condition: str, reason: str, message: str, progress: str
    ) -> None:
        step = self.step
        step.status.phase, step.status.current_round, step.status.message = phase, 0, message
        conditions = set_condition(step.status.conditions, condition, True, reason, message, step.generation)
        step.status.conditions = set_condition(
            conditions,
            "Progressing",
            False,
            reason if phase == vocab.SUCCEEDED else phase,
            progress,
            step.generation,
        )
        step.done = True


class Rounds:
    def __init__(
        self,
        kube: Kube,
        writer: StatusWriter,
        emit: EmitEvent,
        wake: Callable[[str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.writer = writer
        self.emit = as_async(emit)
        self._wake = wake  # training name -> wake its daemon; None: passes poll
        self.events = RoundEvents()
        self._quiet: set[str] = set()  # training uids whose running round is followed, nothing pending
        self._announced: dict[str, str] = {}  # training uid -> the last suspension change announced

    def interval(self, uid: str, base: float, followed: float) -> float:
        """How long the training's daemon may sleep when nothing wakes it."""
        return followed if uid in self._quiet and self.events.following(uid) else base

    def forget(self, uid: str) -> None:
        self.events.stop(uid)
        self._quiet.discard(uid)
        self._announced.pop(uid, None)

    async def drive(
        self,
        ref: res.TrainingRef,
        training: FederatedTraining,
        aggregator: WatchableAggregator,
        fleet: FleetState,
        step: Pass,
    ) -> Driven:
        """One driver step; the bookkeeping goes back into status.controller."""
        spec = training.spec
        recorder = KubeRecorder(self.kube, self.writer, self.emit, ref, spec, step, self._announced)
        driver = RoundDriver(spec, aggregator, KnownFleet(fleet), recorder)
        book = Bookkeeping.of(step.status.controller)
        self._quiet.discard(ref.uid)
        result = await driver.step(book)
        if isinstance(result, Unreachable):
            self._waiting(step, training, str(result.error))
            return Driven(False, None)
        book.store(step.status.controller)
        action = result.action
        generation = step.generation
        if isinstance(action, core.AbortRound | core.WatchRound) and spec.suspend:
            verb = "aborting" if isinstance(action, core.AbortRound) else "finishing"
            message = f"{verb} round {action.number} before suspending"
            step.status.conditions = set_condition(
                step.status.conditions, SUSPENDED, False, "Suspending", message, generation
            )
            step.progressing("Suspending", message)
        elif isinstance(action, core.WaitForClients):
            step.progressing("WaitingForClients", action.reason)
        elif isinstance(action, core.WatchRound):
            step.progressing("RoundRunning", f"round {action.number} is running")
        if isinstance(action, core.StartRound | core.WatchRound) and self._wake is not None:
            name, wake = ref.name, self._wake
            self.events.follow(ref.uid, aggregator, action.number, lambda: wake(name))
            if not fleet.down:  # a failed client's restart is due after a backoff: keep polling
                self._quiet.add(ref.uid)
        elif step.done:
            self.forget(ref.uid)
        suspended = step.current.condition(SUSPENDED)
        if not spec.suspend and suspended is not None and suspended.status == "True":
            step.status.conditions = set_condition(
                step.status.conditions, SUSPENDED, False, "Resumed", "spec.suspend is false", generation
            )
            if recorder.announce("Resumed"):
                message = f"resumed after round {result.view.model_version}"
                await recorder.emit(step.body, "Normal", "TrainingResumed", message)
        return Driven(isinstance(action, core.Suspend), result.view)

    @staticmethod
    def _waiting(step: Pass, training: FederatedTraining, why: str) -> None:
        spec, out = training.spec, step.status
        expected = spec.expected_clients()
        out.phase, out.message = vocab.PENDING, "waiting for the aggregator"
        out.clients_ready, out.expected_clients = f"0/{expected}", expected
        out.round_progress = f"{step.current.completed_rounds}/{spec.rounds}"
        step.progressing("WaitingForAggregator", "the aggregator is starting")
        log.debug("aggregator.waiting", training=training.metadata.name, reason=why)
