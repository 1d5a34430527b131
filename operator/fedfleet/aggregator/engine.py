"""The aggregator's round engine: opens rounds, admits clients, folds updates, closes rounds.

Pure asyncio and numpy, no grpc: methods take plain values, and the gRPC servicers in
`service.py` translate messages and turn `Refusal`s into statuses. The engine composes the
parts along their seams: `admission` (every check), `sums` (the plain or the masked running
sum), `means` (the mean update, with DP as a wrapper), `checkpoints` (persistence) and a
`Clock`. A round ends when every participant has reported or dropped, or at its deadline; it
succeeds with at least `min_clients` updates, otherwise it fails and the global model stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfleet.aggregator import admission
from fedfleet.aggregator.accounting import SiteAccounts
from fedfleet.aggregator.admission import UploadHeader
from fedfleet.aggregator.broadcast import Broadcast
from fedfleet.aggregator.checkpoints import CheckpointStore, StreamedModel, read_tensor
from fedfleet.aggregator.clock import Clock, WallClock
from fedfleet.aggregator.history import RoundHistory
from fedfleet.aggregator.layout import TensorSlot
from fedfleet.aggregator.means import mean_for
from fedfleet.aggregator.rounds import TERMINAL, ClientPhase, Kind, Phase, Round
from fedfleet.aggregator.secure import SecureRound
from fedfleet.aggregator.sums import MaskedSum, PlainSum, RunningSum, Upload
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.chunks import DEFAULT_CHUNK_BYTES, Chunk
from fedfleet.compression import wire_dtype
from fedfleet.logs import get_logger
from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy
from fedfleet.provenance.ledger import Ledger
from fedfleet.refusal import Refusal
from fedfleet.round_config import RoundConfig
from fedfleet.secagg import ProtocolError, SecAggAbort, Verifier
from fedfleet.strategies import make_strategy

Weights = dict[str, np.ndarray]
READY_TTL_SECONDS = 15.0
MAX_CLIENT_ID_CHARACTERS = 253  # a Kubernetes object name; client ids are pod-derived


@dataclass(frozen=True)
class Assignment:
    """What a joining client is told to do."""

    action: str  # wait, train, evaluate, finished
    round: int = 0
    model_version: int = 0
    model_digest: str = ""
    deadline: float = 0.0
    config: RoundConfig = field(default_factory=RoundConfig)


class InFlight:
    """A round's uploads waiting for their next chunk: closing the round ends their waits now."""

    def __init__(self) -> None:
        self.closed = False
        self.waiting: set[asyncio.Timeout] = set()

    def close(self) -> None:
        self.closed = True
        for timer in self.waiting:
            if not timer.expired():  # one already expiring raises its TimeoutError anyway
                timer.reschedule(0)  # in the past: expires at once, the wait raises TimeoutError


class NonFiniteModel(RuntimeError):
    """The round's mean update or new model has Inf or NaN: the round fails, nothing is saved."""


class RoundEngine:
    def __init__(
        self,
        training: str,
        spec: FederatedTrainingSpec,
        initial_weights: Callable[[], Weights],
        state_dir: Path,
        staging_slots: int = 1,
        lineage_key: Ed25519PrivateKey | None = None,
        secagg_verifier: Verifier | None = None,
        clock: Clock | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.training = training
        self.secagg_verifier = secagg_verifier  # the training's CA: SecAgg+ adverts must be signed
        self.spec = spec
        self.clock: Clock = clock or WallClock()
        self.log = get_logger(component="aggregator", training=training)
        self.strategy = make_strategy(spec.strategy)
        self.mean = mean_for(spec.privacy, spec.strategy)
        self.store = CheckpointStore(state_dir)
        self.state_dir = state_dir
        self.ledger = Ledger(training, spec, state_dir, lineage_key)
        latest = self.store.latest()
        if latest is None:
            initial = {"kind": "initial", "phase": "Succeeded", "base_model_digest": spec.model.digest}
            latest = self.store.save(0, initial_weights(), {}, initial, self.ledger.attach)
        self.ledger.advance(latest.path, latest.record["model_digest"])
        # The global model lives in the latest checkpoint, not in memory: downloads read the
        # broadcast built from it, and a round's new model is written from it tensor by tensor.
        self.chunk_bytes = chunk_bytes
        self.broadcast = Broadcast(latest, chunk_bytes)
        self.strategy.load_state(latest.load_strategy_state())
        self.model_version = latest.round
        self.model_digest: str = latest.record["model_digest"]
        self.history = RoundHistory(c.record for c in self.store.completed() if c.round > 0)
        # eval_* of each model version, as its clients measured it (STATE/evaluations): a round's
        # evaluation arrives in the round after it, and is attributed here to the round that made it
        self.evaluations: dict[int, dict[str, float]] = {
            int(path.stem.removeprefix("version-")): json.loads(path.read_text())["metrics"]
            for path in sorted(self.store.evaluations_dir.glob("version-[0-9]*.json"))
        }
        self.layout = latest.layout()
        self.accounts = SiteAccounts(state_dir / "accounting.json")  # per site, read by GetStatus
        self.sum = PlainSum(self.layout, staging_slots, wire=wire_dtype(spec.compression.bits))
        self.masked_sum: MaskedSum | None = None  # allocated by the first SecAgg+ round
        # a new model is built in it tensor by tensor, every round (fresh memory would be page
        # faults every round); untouched, its pages cost nothing until the first aggregation
        largest = max((slot.nbytes for slot in self.layout.slots.values()), default=0)
        self._tensor_buffer = np.empty(largest, np.uint8)
        self.current: Round | None = None
        self.finished = False
        self._seen: dict[str, float] = {}
        self._waiting: dict[str, int] = {}  # client id -> its join calls waiting now
        self.revoked: dict[str, str] = {}  # client id -> why its site was revoked (RevokeSites)
        self._changed = asyncio.Event()
        self._deadline_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._in_flight: dict[int, InFlight] = {}  # round -> its uploads waiting for a chunk
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
        now = self.clock.now()
        return sorted(cid for cid, seen in self._seen.items() if now - seen <= READY_TTL_SECONDS)

    def start_round(
        self,
        number: int,
        kind: Kind,
        participants: list[str],
        timeout: float,
        min_clients: int,
        population: int = 0,
    ) -> Round:
        """`population`: the clients cohorts are drawn from (the controller's; 0 unknown): with
        DP, the round's lineage record carries the training's epsilon after it."""
        if self.finished:
            raise Refusal("FAILED_PRECONDITION", "the training is finished")
        current = self.current
        if current is not None and current.phase not in TERMINAL:
            if current.number == number and current.kind == kind:
                return current  # a controller retrying its own request
            raise Refusal("FAILED_PRECONDITION", f"round {current.number} is still {current.phase.value}")
        admission.check_round_request(kind, number, self.model_version, participants, timeout, min_clients)
        now = self.clock.now()
        secure = None
        if kind == Kind.TRAIN and self.spec.secure_aggregation.enabled:
            secure = SecureRound(
                self.training,
                number,
                list(participants),
                self.spec.secure_aggregation,
                now + timeout,
                self.spec.compression.bits,
                self.secagg_verifier,
                now,
            )
        if kind == Kind.TRAIN:  # an evaluation round takes no updates: its sum is never touched
            # reset only the sum this round uses: zeroing touches every page of a model-sized buffer
            self._sum_for(secure).reset()
        round_ = Round(
            number, kind, list(participants), min_clients, now + timeout, self.model_version, started=now
        )
        round_.secure = secure
        round_.population = population
        round_.phase = Phase.TRAINING
        self._in_flight = {number: InFlight()}  # a retried round number starts open again
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

    def _sum_for(self, secure: SecureRound | None) -> RunningSum:
        """The plain sum, or the masked sum in this round's lanes (replaced when lanes or length
        change: memory stays one model of lanes)."""
        if secure is None:
            return self.sum
        size, lane = self.layout.size + secure.params.weight_words, secure.params.lane_dtype
        if self.masked_sum is None or not self.masked_sum.fits(size, lane):
            self.masked_sum = None  # the old one goes before the new one is allocated
            self.masked_sum = MaskedSum(size, lane, self.state_dir)
        return self.masked_sum

    def drop(self, number: int, client_id: str, reason: str) -> Round:
        """The controller says the client's process or pod is down: it leaves the round, and its
        last join no longer makes it ready (a restarted process is ready once it joins again, so
        the next round waits for it rather than counting on a process that is still starting)."""
        round_ = admission.open_round(self.current, number)
        if client_id not in round_.clients:
            raise Refusal("NOT_FOUND", f"client {client_id!r} is not a participant of round {number}")
        self._seen.pop(client_id, None)
        round_.drop(client_id, reason or "dropped by the controller", self.clock.now())
        self.log.info("client.dropped", round=number, client=client_id, reason=reason)
        self._after_client_change(round_)
        return round_

    def revoke_clients(self, revoked: dict[str, str]) -> list[str]:
        """The whole set of clients of sites revoked at the hub -> why. A newly revoked one is no
        longer ready and is dropped from the open round (an update already in it stays); its
        join, waiting now or later, is refused. Returns those newly revoked."""
        new = sorted(revoked.keys() - self.revoked.keys())
        self.revoked = dict(revoked)
        round_ = self.current
        for cid in new:
            self._seen.pop(cid, None)
            record = round_.clients.get(cid) if round_ is not None and round_.is_open else None
            if round_ is not None and record is not None and record.state != ClientPhase.REPORTED:
                round_.drop(cid, revoked[cid], self.clock.now())
        if new:
            self.log.info("clients.revoked", clients=len(new))
            if round_ is not None and round_.is_open:
                self._after_client_change(round_)
        self._notify()
        return new

    async def abort(self, number: int, reason: str) -> Round:
        """Fail the open round now, uploads and all (a suspend that does not wait for it); the
        model stays, so the round runs again from its start. A closing or closed round is
        returned as it is."""
        round_ = self.current
        if round_ is None or round_.number != number:
            raise Refusal("NOT_FOUND", f"round {number} is not the current round")
        if round_.is_open and self._close_task is None:
            round_.aborted = reason[:200] or "aborted by the controller"
            self.log.info("round.aborting", round=number, reason=round_.aborted)
            self._close_task = closing = asyncio.create_task(self._close(round_, "aborted"))
            await asyncio.shield(closing)
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
        record = self.history.get(number)
        if record is None:
            return None
        done = Round(
            number,
            Kind.TRAIN,
            record["participants"],
            record["min_clients"],
            record["deadline"],
            record["base_version"] if "base_version" in record else record["model_version"],  # older
            started=record["started"],
        )
        done.bytes_received = int(record.get("bytes_received", 0))
        done.produced_evaluation = self.evaluations.get(number, {})
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
                {k.removeprefix("train_"): v for k, v in record["metrics"].items() if k.startswith("train_")},
            )
        }
        return done

    # -- client side ----------------------------------------------------------------------
    async def join(
        self, training: str, client_id: str, session: str, wait: float, site: str = ""
    ) -> Assignment:
        """`site`: the client's site, for its accounting (checked against its certificate)."""
        admission.check_training(self.training, training)
        if not client_id or not session:
            raise Refusal("INVALID_ARGUMENT", "client_id and session are required")
        if len(client_id) > MAX_CLIENT_ID_CHARACTERS:  # ids travel in every status and round listing
            raise Refusal(
                "INVALID_ARGUMENT",
                f"client_id has {len(client_id)} characters; at most {MAX_CLIENT_ID_CHARACTERS}",
            )
        self.accounts.joined(client_id, site)
        self._waiting[client_id] = self._waiting.get(client_id, 0) + 1
        try:
            return await self._wait_for_assignment(client_id, session, wait)
        except asyncio.CancelledError:
            # The caller went away while it waited (its process died, its connection broke):
            # its join no longer says it is there, unless another join of it is still waiting.
            if self._waiting[client_id] == 1:
                self._seen.pop(client_id, None)
            raise
        finally:
            self._waiting[client_id] -= 1
            if not self._waiting[client_id]:
                del self._waiting[client_id]

    async def _wait_for_assignment(self, client_id: str, session: str, wait: float) -> Assignment:
        until = time.monotonic() + min(max(wait, 0.0), 60.0)
        while True:
            if client_id in self.revoked:
                raise Refusal("PERMISSION_DENIED", self.revoked[client_id])
            self._seen[client_id] = self.clock.now()
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
            record.joined = self.clock.now()
            self._notify()
        elif record.session != session:
            # A restarted client process: its earlier self is gone; it joins the next round afresh.
            round_.drop(client_id, "client restarted during the round", self.clock.now())
            self.log.info("client.dropped", round=round_.number, client=client_id, reason="new session")
            self._after_client_change(round_)
            return None
        config = RoundConfig(
            self.spec.model.seed,
            self.strategy.client_terms(),
            round_.secure.settings() if round_.secure is not None else None,
        )
        return Assignment(
            round_.kind.value, round_.number, round_.model_version, self.model_digest, round_.deadline, config
        )

    def model_for(self, training: str, client_id: str, number: int) -> tuple[Broadcast, Callable[[], bool]]:
        """The model's serialized chunks, and a check that the round is still open between chunks."""
        admission.check_training(self.training, training)
        round_ = admission.open_round(self.current, number)
        admission.participant(round_, client_id)
        return self.broadcast, lambda: round_.is_open and self.current is round_

    def report_metrics(
        self,
        training: str,
        client_id: str,
        number: int,
        phase: Kind,
        model_version: int,
        num_examples: int,
        metrics: dict[str, float],
    ) -> None:
        """A client's train metrics, or its evaluation of model `model_version` (phase EVALUATE)."""
        admission.check_training(self.training, training)
        round_ = admission.open_round(self.current, number)
        admission.participant(round_, client_id)
        admission.check_metrics(metrics, num_examples, self.spec.updates.max_examples)
        entry = (num_examples, metrics)
        if phase == Kind.EVALUATE:
            if model_version != round_.model_version:
                raise Refusal(
                    "FAILED_PRECONDITION",
                    f"metrics for model version {model_version}, "
                    f"round {round_.number} evaluates version {round_.model_version}",
                )
            round_.eval_reports[client_id] = entry
            self.evaluations[round_.model_version] = round_.evaluation()
            if round_.kind == Kind.EVALUATE:
                round_.report(client_id, self.clock.now())
                self._after_client_change(round_)
        else:
            round_.train_reports[client_id] = entry
        self._notify()

    async def secagg(
        self, training: str, client_id: str, number: int, session: str, stage: str, payload: bytes
    ) -> tuple[bytes, bool]:
        """One SecAgg+ stage of one client; returns (reply payload, done)."""
        admission.check_training(self.training, training)
        round_ = self.current
        if round_ is None or round_.number != number:
            raise Refusal("FAILED_PRECONDITION", f"round {number} is not the current round")
        if round_.secure is None:
            raise Refusal("FAILED_PRECONDITION", f"round {round_.number} does not use secure aggregation")
        if round_.phase not in (Phase.TRAINING, Phase.AGGREGATING):
            raise Refusal(
                "FAILED_PRECONDITION", f"late: round {round_.number} is closed ({round_.phase.value})"
            )
        record = admission.participant(round_, client_id)
        if record.session is not None and session != record.session:
            raise Refusal("PERMISSION_DENIED", f"client {client_id!r}: SecAgg message from another session")
        reply: tuple[bytes, bool] = await round_.secure.exchange(stage, client_id, payload)
        return reply

    async def receive_update(self, header: UploadHeader, chunks: AsyncIterator[Chunk]) -> tuple[int, int]:
        """Check and fold one upload, all or nothing; returns (bytes received, clients reported)."""
        admission.check_training(self.training, header.training)
        round_ = admission.open_round(self.current, header.round)
        record = admission.participant(round_, header.client_id)
        admission.check_upload(round_, record, header, self.spec.updates.max_examples)
        if round_.secure is not None:
            try:
                round_.secure.server.check_input(header.client_id)
            except ProtocolError as err:
                raise Refusal(err.code, str(err)) from None  # type: ignore[arg-type]
        record.state = ClientPhase.UPLOADING
        upload: Upload | None = None
        try:
            weight = self.mean.upload_weight(header.num_examples)
            upload = await self._sum_for(round_.secure).open_upload(weight)
            async for chunk in self._within_deadlines(round_, chunks):
                if not round_.is_open:  # checked before every add: nothing enters a closed round's sum
                    break
                upload.add(chunk)
            upload.check.check_complete()
            if not round_.is_open or self.current is not round_:
                raise Refusal(
                    "FAILED_PRECONDITION", f"late: round {round_.number} closed before the upload completed"
                )
            plaintext = upload.plaintext()
            if plaintext is not None:
                if self.spec.updates.max_update_norm:  # the staged values are weight x update
                    norm = float(np.linalg.norm(plaintext)) / weight
                    admission.check_update_norm(norm, self.spec.updates.max_update_norm)
                self.mean.check_update(round_, plaintext)
            upload.commit()
            round_.bytes_received += upload.bytes_received
            round_.report(header.client_id, self.clock.now())
        except BaseException:
            if upload is not None:
                upload.abort()  # the sum is as before; the client may upload again
            if record.state == ClientPhase.UPLOADING:
                record.state = ClientPhase.TRAINING
            raise

        self.log.info(
            "update.accepted",
            round=round_.number,
            client=header.client_id,
            examples=header.num_examples,
            bytes=upload.bytes_received,
        )
        self._after_client_change(round_)
        return upload.bytes_received, len(round_.reported)

    async def _within_deadlines(self, round_: Round, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """The upload's chunks, refused once the stream idles for uploadIdleSeconds or runs past
        uploadTimeoutSeconds or the round's deadline: a stalled client cannot hold a slot. The
        wait for each chunk is one timer the round's close expires at once (no task per chunk)."""
        limits, flight = self.spec.updates, self._in_flight.setdefault(round_.number, InFlight())
        started = time.monotonic()
        iterator = aiter(chunks)
        while True:
            total_left = started + limits.upload_timeout_seconds - time.monotonic()
            wait = min(limits.upload_idle_seconds, total_left, round_.deadline - self.clock.now())
            chunk: Chunk | None = None
            try:
                async with asyncio.timeout(max(wait, 0) if not flight.closed else 0) as timer:
                    flight.waiting.add(timer)
                    try:
                        chunk = await anext(iterator, None)
                    finally:
                        flight.waiting.discard(timer)
            except TimeoutError:
                if flight.closed:
                    why = f"round {round_.number} closed during the upload"
                elif wait == limits.upload_idle_seconds:
                    why = f"no chunk for {wait:g} s (spec.updates.uploadIdleSeconds)"
                else:
                    why = "past its deadline (spec.updates.uploadTimeoutSeconds or the round's)"
                raise Refusal("DEADLINE_EXCEEDED", f"upload refused: {why}") from None
            if chunk is None:
                return
            yield chunk

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
        await self.clock.sleep_until(round_.deadline)
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
            self._in_flight.setdefault(round_.number, InFlight()).close()  # uploads in flight end
            self._sum_for(round_.secure).close_uploads()  # uploads in flight leave the sum
            reported = len(round_.reported)
            if round_.eval_reports:  # the model this round started from, whatever becomes of the round
                await asyncio.to_thread(self._save_evaluation, round_)
            if round_.aborted:
                round_.phase = Phase.FAILED
                round_.reason = f"aborted: {round_.aborted}"
            elif reported < round_.min_clients:
                round_.phase = Phase.FAILED
                round_.reason = (
                    f"{cause} with {reported} of {len(round_.participants)} participants reported; "
                    f"minClients is {round_.min_clients}"
                )
            elif round_.kind == Kind.EVALUATE:
                round_.model_digest = self.model_digest
                round_.phase = Phase.SUCCEEDED
            else:
                round_.phase = Phase.AGGREGATING
                self._notify()
                await self._aggregate(round_)
            round_.finished = round_.finished or self.clock.now()
            self.accounts.in_rounds(round_.client_seconds())
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
        base = self.store.latest()  # the model this round trained
        assert base is not None
        try:
            mean = await self._mean_update(round_)
            round_.epsilon = await self._epsilon_after(round_)

            in_base = {slot.name: (slot, begin) for slot, begin in base.tensor_offsets()}  # one header read

            def next_tensor(slot: TensorSlot) -> np.ndarray:
                """One tensor of the new model: the strategy's step from the base, tensor by tensor
                (each read into the same buffer: it is written out before the next is read)."""
                tensor = {slot.name: read_tensor(base.model_path, *in_base[slot.name], self._tensor_buffer)}
                self.strategy.apply(tensor, {slot.name: mean[slot.name]})
                if tensor[slot.name].dtype.kind == "f" and not admission.all_finite(tensor[slot.name]):
                    raise NonFiniteModel("the new global model is not finite")
                return tensor[slot.name]

            record = round_.to_record() | {
                "phase": Phase.SUCCEEDED.value,
                "finished": self.clock.now(),
                "base_model_digest": self.spec.model.digest,  # what an adapter checkpoint belongs to
            }
            checkpoint = await asyncio.to_thread(
                self.store.save,
                round_.number,
                StreamedModel(self.layout, next_tensor),
                self.strategy.state,
                record,
                self.ledger.attach,  # the lineage record is part of the checkpoint
            )
            broadcast = await asyncio.to_thread(Broadcast, checkpoint, self.chunk_bytes)
        except Exception as err:  # the strategy's state may be half-updated: back to the checkpoint's
            reason = round_.secure.abort_reason if isinstance(err, SecAggAbort) and round_.secure else ""
            self.strategy.load_state(base.load_strategy_state())
            round_.phase, round_.reason = Phase.FAILED, reason or f"aggregation failed: {err}"
            if isinstance(err, NonFiniteModel):  # a refusal of the inputs, not a bug: no traceback
                self.log.warning("round.aggregation_failed", round=round_.number, reason=str(err))
            else:
                self.log.exception("round.aggregation_failed", round=round_.number)
            return
        # Published only now: whoever sees Succeeded can rely on the checkpoint and the new version.
        self.broadcast = broadcast
        self.model_version = round_.number
        self.model_digest = round_.model_digest = checkpoint.record["model_digest"]
        self.ledger.advance(checkpoint.path, self.model_digest)
        self.history.append(checkpoint.record)
        round_.phase = Phase.SUCCEEDED

    async def _mean_update(self, round_: Round) -> Weights:
        """The round's mean update per tensor, computed in place in the sum's buffer."""
        if round_.secure is None:
            total, weight = self.sum.total, self.sum.total_weight
            self.sum.total_weight = 0.0  # spent until reset()
        else:
            assert self.masked_sum is not None
            total, weight = await round_.secure.unmask(self.masked_sum.total, set(round_.reported))
            if weight <= 0:
                raise SecAggAbort("the unmasked total weight is not positive")
        mean = await self.mean.release(round_, total, weight)
        if not admission.all_finite(mean):
            raise NonFiniteModel(
                "the weighted mean update is not finite (an update or weight beyond float32 range)"
            )
        if round_.privacy is not None:
            self.log.info("round.privacy", round=round_.number, **round_.privacy)
        return {slot.name: view for slot, view in self.layout.views(mean)}

    async def _epsilon_after(self, round_: Round) -> float | None:
        """The training's epsilon once this DP round is released: the rounds released before it
        and this one, charged with the population the controller gave with StartRound (None
        without DP or population, or when infinite: noiseMultiplier 0)."""
        if round_.privacy is None or round_.population < 1:
            return None
        from fedfleet.privacy.budget import epsilon_spent  # dp-accounting: only trainings with DP

        released = (*self.history.released, ReleasedRounds(RoundPrivacy.from_record(round_.privacy), 1))
        value = await asyncio.to_thread(epsilon_spent, self.spec.privacy, released, round_.population)
        return value if math.isfinite(value) else None

    def _save_evaluation(self, round_: Round) -> None:
        """STATE/evaluations/version-N.json: model N's held-out metrics, measured by the clients
        of round N+1 (or of the final evaluation round); written before the round's own result."""
        record = {
            "model_version": round_.model_version,
            "model_digest": self.model_digest,  # not yet replaced: aggregation comes after
            "measured_in_round": round_.number,
            "kind": round_.kind.value,
            "clients": sorted(round_.eval_reports),
            "metrics": round_.evaluation(),
            "recorded": self.clock.now(),
        }
        self.store.save_evaluation(round_.model_version, record)
