"""The aggregator's round engine: opens rounds, admits clients, folds updates, closes rounds.

Pure asyncio and numpy, no grpc: the gRPC servicers in `service.py` translate messages and
turn `Refusal`s into statuses. A round ends when every participant has reported or dropped,
or at its deadline; it succeeds with at least `min_clients` updates, otherwise it fails and
the global model stays as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfleet.aggregator.checkpoints import CheckpointStore
from fedfleet.aggregator.rounds import TERMINAL, ClientPhase, Kind, Phase, Round
from fedfleet.aggregator.secure import SecureRound
from fedfleet.aggregator.update_sum import ModelLayout, UpdateSum
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.compression import wire_dtype
from fedfleet.logs import get_logger
from fedfleet.privacy import l2_norm, release_mean
from fedfleet.provenance.ledger import Ledger
from fedfleet.refusal import Refusal
from fedfleet.secagg import MASKED_TENSOR, ProtocolError, SecAggAbort, Verifier
from fedfleet.strategies import make_strategy
from fedfleet.v1 import aggregator_pb2 as pb

Weights = dict[str, np.ndarray]
READY_TTL_SECONDS = 15.0


@dataclass(frozen=True)
class Assignment:
    """What a joining client is told to do."""

    action: str  # wait, train, evaluate, finished
    round: int = 0
    model_version: int = 0
    model_digest: str = ""
    deadline: float = 0.0
    config: str = "{}"


class RoundEngine:
    def __init__(
        self,
        training: str,
        spec: FederatedTrainingSpec,
        initial_weights: Callable[[], Weights],
        state_dir: Path,
        staging_slots: int = 2,
        lineage_key: Ed25519PrivateKey | None = None,
        secagg_verifier: Verifier | None = None,
    ) -> None:
        self.training = training
        self.secagg_verifier = secagg_verifier  # the training's CA: SecAgg+ adverts must be signed
        self.spec = spec
        self.log = get_logger(component="aggregator", training=training)
        self.strategy = make_strategy(spec.strategy)
        self.store = CheckpointStore(state_dir)
        self.evaluations_dir = state_dir / "evaluations"
        self.evaluations_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(training, spec, state_dir, lineage_key)
        latest = self.store.latest()
        if latest is None:
            initial = {"kind": "initial", "phase": "Succeeded", "base_model_digest": spec.model.digest}
            latest = self.store.save(0, initial_weights(), {}, initial, self.ledger.attach)
        self.ledger.advance(latest.path, latest.record["model_digest"])
        self.weights: Weights = latest.load_weights()
        self.strategy.load_state(latest.load_strategy_state())
        self.model_version = latest.round
        self.model_digest: str = latest.record["model_digest"]
        self.history: list[dict[str, Any]] = [c.record for c in self.store.completed() if c.round > 0]
        self.layout = ModelLayout(self.weights)
        self.sum = UpdateSum(self.layout, staging_slots, wire=wire_dtype(spec.compression.bits))
        self._staging_slots = staging_slots
        self.masked_sum = self._masked_sum_for(None, np.dtype(np.uint32), 1)
        self.current: Round | None = None
        self.finished = False
        self._seen: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._deadline_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self.log.info(
            "engine.ready",
            model_version=self.model_version,
            model_digest=self.model_digest,
            parameters=self.layout.size,
        )

    # -- change notification ------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # -- control side ---------------------------------------------------------------------
    def ready_clients(self) -> list[str]:
        now = time.time()
        return sorted(cid for cid, seen in self._seen.items() if now - seen <= READY_TTL_SECONDS)

    def start_round(
        self, number: int, kind: Kind, participants: list[str], timeout: float, min_clients: int
    ) -> Round:
        if self.finished:
            raise Refusal("FAILED_PRECONDITION", "the training is finished")
        current = self.current
        if current is not None and current.phase not in TERMINAL:
            if current.number == number and current.kind == kind:
                return current  # a controller retrying its own request
            raise Refusal("FAILED_PRECONDITION", f"round {current.number} is still {current.phase.value}")
        expected = self.model_version + 1 if kind == Kind.TRAIN else self.model_version
        if number != expected:
            raise Refusal(
                "FAILED_PRECONDITION",
                f"cannot start {kind.value} round {number}: the model is at version {self.model_version}, "
                f"the next {kind.value} round is {expected}",
            )
        if not participants or len(set(participants)) != len(participants):
            raise Refusal("INVALID_ARGUMENT", "participants must be a non-empty list of distinct client ids")
        if not 1 <= min_clients <= len(participants):
            raise Refusal(
                "INVALID_ARGUMENT", f"min_clients {min_clients} must be within 1..{len(participants)}"
            )
        if timeout <= 0:
            raise Refusal("INVALID_ARGUMENT", "timeout_seconds must be positive")
        secure = None
        if kind == Kind.TRAIN and self.spec.secure_aggregation.enabled:
            secure = SecureRound(
                self.training,
                number,
                list(participants),
                self.spec.secure_aggregation,
                time.time() + timeout,
                self.spec.compression.bits,
                self.secagg_verifier,
            )
            params = secure.params
            self.masked_sum = self._masked_sum_for(self.masked_sum, params.lane_dtype, params.weight_words)
        # reset only the sum this round uses: zeroing touches every page of a model-sized buffer
        (self.masked_sum if secure is not None else self.sum).reset()
        round_ = Round(
            number, kind, list(participants), min_clients, time.time() + timeout, self.model_version
        )
        round_.secure = secure
        round_.phase = Phase.TRAINING
        self.current = round_
        self._deadline_task = asyncio.create_task(self._close_at_deadline(round_))
        self.log.info(
            "round.started",
            round=number,
            kind=kind.value,
            participants=len(participants),
            min_clients=min_clients,
            timeout=timeout,
        )
        self._notify()
        return round_

    def _masked_sum_for(self, current: UpdateSum | None, lane: np.dtype[Any], weight_words: int) -> UpdateSum:
        """The masked sum in this round's lanes: `current` while lanes and length match, else a
        new one that replaces it (memory stays one model of lanes plus the staging slots)."""
        size = self.layout.size + weight_words
        if current is not None and current.dtype == lane and current.layout.size == size:
            return current
        layout = ModelLayout({MASKED_TENSOR: np.empty(size, dtype=lane)})
        return UpdateSum(layout, self._staging_slots, lane)

    def drop(self, number: int, client_id: str, reason: str) -> Round:
        round_ = self._open_round(number)
        if client_id not in round_.clients:
            raise Refusal("NOT_FOUND", f"client {client_id!r} is not a participant of round {number}")
        round_.drop(client_id, reason or "dropped by the controller")
        self.log.info("client.dropped", round=number, client=client_id, reason=reason)
        self._after_client_change(round_)
        return round_

    def finish(self) -> None:
        self.finished = True
        self.log.info("training.finished", model_version=self.model_version)
        self._notify()

    async def watch(self, number: int) -> AsyncIterator[Round]:
        """Yields the round after every change until it ends; waits for it to start if need be."""
        while True:
            # Take the phase and the change event before yielding: the round may move on while
            # the consumer holds the yield, and that change must neither end the stream early
            # (the terminal state is always the last message) nor go unnoticed.
            changed, current = self._changed, self.current
            if current is not None and current.number == number:
                phase = current.phase
                yield current
                if phase in TERMINAL:
                    return
            elif number <= self.model_version and (record := self.record_of(number)) is not None:
                yield record
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 5.0)

    def record_of(self, number: int) -> Round | None:
        """A completed training round rebuilt from its checkpoint record (after a restart)."""
        for record in self.history:
            if record["round"] == number:
                done = Round(
                    number,
                    Kind.TRAIN,
                    record["participants"],
                    record["min_clients"],
                    record["deadline"],
                    record["model_version"],
                    started=record["started"],
                )
                done.phase, done.finished = Phase.SUCCEEDED, record["finished"]
                done.model_digest = record["model_digest"]
                done.privacy = record.get("privacy")
                for cid in record["dropped"]:
                    done.drop(cid, record["clients"][cid]["reason"])
                for cid in record["reported"]:
                    done.clients[cid].state = ClientPhase.REPORTED
                done.train_reports = {
                    "": (
                        1,
                        {
                            k.removeprefix("train_"): v
                            for k, v in record["metrics"].items()
                            if k.startswith("train_")
                        },
                    )
                }
                done.eval_reports = {
                    "": (
                        1,
                        {
                            k.removeprefix("eval_"): v
                            for k, v in record["metrics"].items()
                            if k.startswith("eval_")
                        },
                    )
                }
                return done
        return None

    # -- client side ----------------------------------------------------------------------
    def _check_training(self, training: str) -> None:
        if training != self.training:
            raise Refusal(
                "PERMISSION_DENIED", f"this aggregator serves training {self.training!r}, not {training!r}"
            )

    def _open_round(self, number: int) -> Round:
        current = self.current
        if current is None or current.number != number:
            open_now = (
                f"round {current.number} is" if current is not None and current.is_open else "no round is"
            )
            raise Refusal("FAILED_PRECONDITION", f"round {number} is not open ({open_now} open)")
        if not current.is_open:
            raise Refusal("FAILED_PRECONDITION", f"late: round {number} is closed ({current.phase.value})")
        return current

    def _participant(self, round_: Round, client_id: str) -> Any:
        record = round_.clients.get(client_id)
        if record is None:
            raise Refusal(
                "PERMISSION_DENIED", f"client {client_id!r} is not a participant of round {round_.number}"
            )
        if record.state == ClientPhase.DROPPED:
            raise Refusal(
                "FAILED_PRECONDITION",
                f"client {client_id!r} was dropped from round {round_.number}: {record.reason}",
            )
        return record

    async def join(self, training: str, client_id: str, session: str, wait: float) -> Assignment:
        self._check_training(training)
        if not client_id or not session:
            raise Refusal("INVALID_ARGUMENT", "client_id and session are required")
        until = time.monotonic() + min(max(wait, 0.0), 60.0)
        while True:
            self._seen[client_id] = time.time()
            if self.finished:
                return Assignment(
                    "finished", model_version=self.model_version, model_digest=self.model_digest
                )
            assignment = self._assignment(client_id, session)
            if assignment is not None:
                return assignment
            remaining = until - time.monotonic()
            if remaining <= 0:
                return Assignment("wait", model_version=self.model_version)
            await self._wait_change(remaining)

    def _assignment(self, client_id: str, session: str) -> Assignment | None:
        round_ = self.current
        if round_ is None or not round_.is_open or client_id not in round_.clients:
            return None
        record = round_.clients[client_id]
        if record.state in (ClientPhase.DROPPED, ClientPhase.REPORTED):
            return None
        if record.session is None:
            record.session, record.state = session, ClientPhase.TRAINING
            self._notify()
        elif record.session != session:
            # A restarted client process: its earlier self is gone; it joins the next round afresh.
            round_.drop(client_id, "client restarted during the round")
            self.log.info("client.dropped", round=round_.number, client=client_id, reason="new session")
            self._after_client_change(round_)
            return None
        settings = self.strategy.client_config() | {"seed": self.spec.model.seed}
        if round_.secure is not None:
            settings |= round_.secure.client_config()
        config = json.dumps(settings, sort_keys=True)
        return Assignment(
            round_.kind.value, round_.number, round_.model_version, self.model_digest, round_.deadline, config
        )

    def model_for(self, training: str, client_id: str, number: int) -> tuple[Weights, Callable[[], bool]]:
        """The weights to stream, and a check that the round is still open between chunks."""
        self._check_training(training)
        round_ = self._open_round(number)
        self._participant(round_, client_id)
        return self.weights, lambda: round_.is_open and self.current is round_

    def report_metrics(self, report: pb.MetricsReport) -> None:
        self._check_training(report.training)
        round_ = self._open_round(report.round)
        record = self._participant(round_, report.client_id)
        metrics = {k: float(v) for k, v in report.metrics.items()}
        if not all(np.isfinite(list(metrics.values()))):
            raise Refusal("INVALID_ARGUMENT", "metrics must be finite numbers")
        entry = (int(report.num_examples), metrics)
        if report.phase == pb.MetricsReport.PHASE_EVALUATE:
            if report.model_version != round_.model_version:
                raise Refusal(
                    "FAILED_PRECONDITION",
                    f"metrics for model version {report.model_version}, "
                    f"round {round_.number} evaluates version {round_.model_version}",
                )
            round_.eval_reports[report.client_id] = entry
            if round_.kind == Kind.EVALUATE:
                record.state = ClientPhase.REPORTED
                self._after_client_change(round_)
        elif report.phase == pb.MetricsReport.PHASE_TRAIN:
            round_.train_reports[report.client_id] = entry
        else:
            raise Refusal("INVALID_ARGUMENT", "metrics phase must be TRAIN or EVALUATE")
        self._notify()

    async def secagg(self, request: pb.SecAggRequest) -> tuple[bytes, bool]:
        self._check_training(request.training)
        round_ = self.current
        if round_ is None or round_.number != request.round:
            raise Refusal("FAILED_PRECONDITION", f"round {request.round} is not the current round")
        if round_.secure is None:
            raise Refusal("FAILED_PRECONDITION", f"round {round_.number} does not use secure aggregation")
        if round_.phase not in (Phase.TRAINING, Phase.AGGREGATING):
            raise Refusal(
                "FAILED_PRECONDITION", f"late: round {round_.number} is closed ({round_.phase.value})"
            )
        record = self._participant(round_, request.client_id)
        if record.session is not None and request.session != record.session:
            raise Refusal(
                "PERMISSION_DENIED", f"client {request.client_id!r}: SecAgg message from another session"
            )
        reply: tuple[bytes, bool] = await round_.secure.exchange(
            request.stage, request.client_id, request.payload
        )
        return reply

    async def receive_update(
        self, header: pb.UpdateHeader, chunks: AsyncIterator[pb.TensorChunk]
    ) -> tuple[int, int]:
        """Stage, check and fold one upload; returns (bytes received, clients reported)."""
        self._check_training(header.training)
        round_ = self._open_round(header.round)
        if round_.kind != Kind.TRAIN:
            raise Refusal("FAILED_PRECONDITION", f"round {round_.number} is an evaluation round: no updates")
        record = self._participant(round_, header.client_id)
        if record.state == ClientPhase.REPORTED:
            raise Refusal(
                "ALREADY_EXISTS", f"client {header.client_id!r} already reported for round {round_.number}"
            )
        if record.state == ClientPhase.UPLOADING:
            raise Refusal(
                "ALREADY_EXISTS",
                f"client {header.client_id!r} is already uploading for round {round_.number}",
            )
        if record.session is not None and header.session != record.session:
            raise Refusal("PERMISSION_DENIED", f"client {header.client_id!r}: upload from another session")
        if header.base_version != round_.model_version:
            raise Refusal(
                "FAILED_PRECONDITION",
                f"update computed from model version {header.base_version}, "
                f"round {round_.number} trains version {round_.model_version}",
            )
        if header.num_examples == 0:
            raise Refusal("INVALID_ARGUMENT", "num_examples must be positive")
        update_sum = self.sum
        if round_.secure is not None:
            try:
                round_.secure.server.check_input(header.client_id)
            except ProtocolError as err:
                raise Refusal(err.code, str(err)) from None  # type: ignore[arg-type]
            update_sum = self.masked_sum
        record.state = ClientPhase.UPLOADING
        staged = await update_sum.acquire()
        try:
            async for chunk in chunks:
                if not round_.is_open:
                    break
                staged.add_chunk(chunk)
            staged.check_complete()
            if not round_.is_open or self.current is not round_:
                raise Refusal(
                    "FAILED_PRECONDITION", f"late: round {round_.number} closed before the upload completed"
                )
            weight = float(header.num_examples)
            if self.spec.privacy.enabled:  # DP-FedAvg: weight 1, so one client moves the sum <= clipNorm
                weight = 1.0
                if round_.secure is None:
                    self._check_clipped(round_, staged.buffer)
            update_sum.fold(staged, weight)
            record.state = ClientPhase.REPORTED
        except BaseException:
            if record.state == ClientPhase.UPLOADING:
                record.state = ClientPhase.TRAINING  # the client may upload again; the sum is untouched
            raise
        finally:
            update_sum.release(staged)
        self.log.info(
            "update.accepted",
            round=round_.number,
            client=header.client_id,
            examples=header.num_examples,
            bytes=staged.bytes_received,
        )
        self._after_client_change(round_)
        return staged.bytes_received, len(round_.reported)

    # -- closing --------------------------------------------------------------------------
    def _after_client_change(self, round_: Round) -> None:
        if round_.secure is not None:
            for client in round_.dropped:
                if client not in round_.secure.gone:
                    round_.secure.drop(client)
        self._notify()
        if round_.is_open and round_.all_accounted and self._close_task is None:
            self._close_task = asyncio.create_task(self._close(round_, "all participants accounted for"))

    async def _close_at_deadline(self, round_: Round) -> None:
        await asyncio.sleep(max(0.0, round_.deadline - time.time()))
        if round_.is_open:
            await self._close(round_, "deadline passed")

    async def _close(self, round_: Round, cause: str) -> None:
        try:
            if not round_.is_open:
                return
            if self._deadline_task is not None and self._deadline_task is not asyncio.current_task():
                self._deadline_task.cancel()
            if round_.secure is not None:
                round_.secure.cancel()
            reported = len(round_.reported)
            if reported < round_.min_clients:
                round_.phase = Phase.FAILED
                round_.reason = (
                    f"{cause} with {reported} of {len(round_.participants)} participants reported; "
                    f"minClients is {round_.min_clients}"
                )
            elif round_.kind == Kind.EVALUATE:
                await asyncio.to_thread(self._save_evaluation, round_)
                round_.phase = Phase.SUCCEEDED
            else:
                round_.phase = Phase.AGGREGATING
                self._notify()
                await self._aggregate(round_)
            round_.finished = round_.finished or time.time()
            self.log.info(
                "round.closed",
                round=round_.number,
                kind=round_.kind.value,
                phase=round_.phase.value,
                reason=round_.reason,
                reported=reported,
                metrics=round_.metrics(),
            )
        finally:
            self._close_task = None
            self._notify()

    async def _aggregate(self, round_: Round) -> None:
        try:
            self.strategy.apply(self.weights, await self._mean_update(round_))
            record = round_.to_record() | {
                "phase": Phase.SUCCEEDED.value,
                "finished": time.time(),
                "base_model_digest": self.spec.model.digest,  # what an adapter checkpoint belongs to
            }
            checkpoint = await asyncio.to_thread(
                self.store.save,
                round_.number,
                self.weights,
                self.strategy.state(),
                record,
                self.ledger.attach,  # the lineage record is part of the checkpoint
            )
        except Exception as err:  # the in-memory model may be half-updated: go back to the checkpoint
            reason = round_.secure.abort_reason if isinstance(err, SecAggAbort) and round_.secure else ""
            latest = self.store.latest()
            assert latest is not None
            self.weights = latest.load_weights()
            self.strategy.load_state(latest.load_strategy_state())
            round_.phase, round_.reason = Phase.FAILED, reason or f"aggregation failed: {err}"
            self.log.exception("round.aggregation_failed", round=round_.number)
            return
        # Published only now: whoever sees Succeeded can rely on the checkpoint and the new version.
        self.model_version = round_.number
        self.model_digest = round_.model_digest = checkpoint.record["model_digest"]
        self.ledger.advance(checkpoint.path, self.model_digest)
        self.history.append(checkpoint.record)
        round_.phase = Phase.SUCCEEDED

    def _check_clipped(self, round_: Round, update: np.ndarray) -> None:
        """A plaintext DP update beyond clipNorm is refused: the noise is calibrated to that bound."""
        norm, clip_norm = l2_norm(update), self.spec.privacy.clip_norm or 0.0
        if norm > clip_norm:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"update L2 norm {norm:.6g} exceeds spec.privacy.clipNorm {clip_norm:g}; "
                "clip before uploading",
            )
        round_.max_update_norm = max(round_.max_update_norm, norm)

    async def _mean_update(self, round_: Round) -> Weights:
        privacy = self.spec.privacy
        if round_.secure is None:
            if not privacy.enabled:
                return self.sum.mean()
            values = self.sum.total
            self.sum.total_weight = 0.0  # spent until reset(), as mean() leaves it
        else:
            values, weight = await round_.secure.unmask(self.masked_sum.total, set(round_.reported))
            if weight <= 0:
                raise SecAggAbort("the unmasked total weight is not positive")
            if not privacy.enabled:
                values /= np.float32(weight)
        if privacy.enabled:  # noise (central) and the mean over the round's fixed cohort size
            released = await asyncio.to_thread(
                release_mean,
                values,
                privacy,
                len(round_.participants),
                len(round_.reported),
                round_.max_update_norm,
            )
            round_.privacy = released.to_record()
            self.log.info("round.privacy", round=round_.number, **round_.privacy)
        return {slot.name: view for slot, view in self.layout.views(values)}

    def _save_evaluation(self, round_: Round) -> None:
        target = self.evaluations_dir / f"version-{round_.model_version:06d}.json"
        tmp = target.with_suffix(".tmp")
        round_.model_digest = self.model_digest
        tmp.write_text(
            json.dumps(round_.to_record() | {"phase": Phase.SUCCEEDED.value}, indent=2, sort_keys=True)
        )
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(target)
