"""`fedfleet client`: join rounds, train on this site's data, upload the update, until finished."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from cryptography import x509

from fedfleet.api.training import FederatedTraining
from fedfleet.chunks import reuse_arrays
from fedfleet.client.connection import AggregatorConnection
from fedfleet.convert import round_config_from_pb
from fedfleet.identity.ca import identity_of
from fedfleet.identity.files import TlsFiles
from fedfleet.privacy import privatize_update
from fedfleet.round_config import RoundConfig, SecAggSettings
from fedfleet.secagg import (
    MASKED_TENSOR,
    LongTermKey,
    ProtocolError,
    SecAggClient,
    Signer,
    Verifier,
)
from fedfleet.tasks.base import SiteContext, Task, TrainContext, Weights, load_task
from fedfleet.v1 import aggregator_pb2 as pb


@dataclass(frozen=True)
class ClientOptions:
    address: str
    site: str
    client_id: str
    partition: int
    num_partitions: int
    data_dir: Path | None = None
    device: str = ""
    connect_timeout: float = 120.0
    threads: int = 1
    tls: TlsFiles | None = None  # None: plaintext, loopback only
    server_name: str = ""  # verify the aggregator's certificate against this name


def round_seed(base: int, round_number: int, client_id: str) -> int:
    """Training randomness fixed by (seed, round, client): a retried round trains identically."""
    digest = hashlib.sha256(f"{base}/{round_number}/{client_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def pick_device(requested: str) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SiteClient:
    def __init__(self, training: FederatedTraining, options: ClientOptions) -> None:
        torch.set_num_threads(options.threads)  # several clients share a machine in local runs
        self.training = training
        self.options = options
        self.device = pick_device(options.device)
        self.task: Task[Any] = load_task(training.spec.task, training.spec.model)
        site = SiteContext(
            options.site,
            options.client_id,
            options.partition,
            options.num_partitions,
            training.spec.model.seed,
            options.data_dir,
        )
        self.data = self.task.load_data(site)
        self.model = self.task.build_model(training.spec.model.seed).to(self.device)
        self.conn = AggregatorConnection(
            options.address,
            training.metadata.name,
            options.client_id,
            options.site,
            options.connect_timeout,
            options.tls,
            options.server_name,
        )
        self.log = self.conn.log.bind(device=str(self.device))
        self._secagg_attempts: dict[int, int] = {}  # round -> the last SecAgg+ attempt joined
        self._secagg_identity: tuple[bytes, LongTermKey, Verifier] | None = None
        # model-sized arrays kept across rounds, so their pages are touched once (a fresh page
        # costs more than the copy into it): the global weights (the next download refills
        # them), the plain update, the masked upload's words
        self._global: Weights = {}
        self._plain_update: Weights = {}
        self._upload_words: np.ndarray | None = None

    def _identity(self) -> tuple[LongTermKey | None, Verifier | None]:
        """With mTLS: our long-term SecAgg+ key, signed once with our certificate's key, and a
        verifier that accepts only neighbours whose certificates chain to the training's CA and
        name them; both kept across rounds (their caches are what makes later rounds cheap),
        made anew when the certificate files change."""
        if self.options.tls is None:
            return None, None
        cert, key, ca = self.options.tls.read()
        if self._secagg_identity is None or self._secagg_identity[0] != cert + key + ca:
            name = self.training.metadata.name
            namespace = identity_of(x509.load_pem_x509_certificate(cert)).namespace
            long_term = LongTermKey(Signer.from_pem(cert, key), name, self.options.client_id)
            self._secagg_identity = (cert + key + ca, long_term, Verifier(ca, namespace, name))
        return self._secagg_identity[1], self._secagg_identity[2]

    def run(self) -> int:
        self.log.info("client.started", session=self.conn.session)
        try:
            while True:
                reply = self.conn.join()
                if reply.action == pb.JoinReply.ACTION_FINISHED:
                    self.log.info("client.finished", model_version=reply.model_version)
                    return 0
                if reply.action in (pb.JoinReply.ACTION_TRAIN, pb.JoinReply.ACTION_EVALUATE):
                    self._round(reply)
        finally:
            self.conn.close()

    def _exchange_keys(self, round_number: int, settings: SecAggSettings) -> SecAggClient:
        """SecAgg+ stages 1 and 2, before training: keys out, neighbours' keys and shares in."""
        params = settings.params()
        attempt = settings.attempt
        if attempt <= self._secagg_attempts.get(round_number, -1):
            raise ProtocolError(
                f"round {round_number} attempt {attempt} is not newer than one already joined"
            )
        self._secagg_attempts[round_number] = attempt
        long_term, verifier = self._identity()
        secure = SecAggClient(
            self.training.metadata.name,
            round_number,
            self.options.client_id,
            params,
            long_term=long_term,
            verifier=verifier,
            attempt=attempt,
        )
        neighbours = self.conn.secagg(round_number, pb.SecAggRequest.STAGE_ADVERTISE_KEYS, secure.advertise())
        shares = self.conn.secagg(
            round_number, pb.SecAggRequest.STAGE_SHARE_KEYS, secure.share_keys(neighbours.payload)
        )
        secure.receive_shares(shares.payload)
        return secure

    def _reveal(self, round_number: int, secure: SecAggClient) -> None:
        """Once uploads close: endorse the survivor set to our neighbours, and reveal only when
        t of them vouch for the same set (the shares follow from it)."""
        while True:
            survivors = self.conn.secagg(round_number, pb.SecAggRequest.STAGE_UNMASK, b"")
            if survivors.payload:
                break
        endorsed = self.conn.secagg(
            round_number, pb.SecAggRequest.STAGE_CONSISTENCY, secure.endorse(survivors.payload)
        )
        self.conn.secagg(round_number, pb.SecAggRequest.STAGE_UNMASK, secure.reveal(endorsed.payload))

    def _privatize(self, update: dict[str, np.ndarray], config: RoundConfig, log: Any) -> float:
        """DP-FedAvg before quantization and masking: clip to clipNorm, add this client's noise
        share in distributed mode (n = the round's SecAgg+ cohort). Returns the weight to send: 1."""
        privacy = self.training.spec.privacy
        secure = config.secure_aggregation
        cohort = secure.participants if secure is not None else 1
        clip = privatize_update(update, privacy, cohort)
        log.info("update.clipped", norm=clip.norm, scale=clip.scale, clip_norm=privacy.clip_norm)
        return 1.0

    def _words(self, secure: SecAggClient, weights: Weights) -> np.ndarray:
        """The masked upload's buffer (uint32, M + W words), kept across rounds: its pages are
        touched once, and the update is flattened, masked and sent from it in place."""
        size = sum(array.size for array in weights.values()) + secure.params.weight_words
        if self._upload_words is None or len(self._upload_words) != size:
            self._upload_words = None  # the old one goes first
            self._upload_words = np.zeros(size, dtype=np.uint32)
        return self._upload_words

    def _update(self, global_weights: Weights, flat: np.ndarray | None) -> Weights:
        """local - global per tensor (the local weights are only read): written into `flat`
        (float32, tensors in name order: the masked layout) when given, else into arrays kept
        across rounds (each tensor's own dtype)."""
        local = self.task.federated_weights(self.model)
        if flat is None:
            self._plain_update = reuse_arrays(self._plain_update, global_weights)
        update, offset = {}, 0
        for name in sorted(global_weights):
            base = global_weights[name]
            if flat is None:
                out = self._plain_update[name]
            else:
                out = flat[offset : offset + base.size].reshape(base.shape)
                offset += base.size
            update[name] = np.subtract(local[name], base, out=out)
        return update

    def _round(self, reply: pb.JoinReply) -> None:
        log = self.log.bind(round=reply.round)
        try:
            config = round_config_from_pb(reply.config)
            settings = config.secure_aggregation
            secure = self._exchange_keys(reply.round, settings) if settings is not None else None
            global_weights = self._global = self.conn.download(reply.round, reply.deadline_unix, self._global)
            self.task.load_federated_weights(self.model, global_weights)
            examples, metrics = self.task.evaluate(self.model, self.data, self.device)
            self.conn.report(
                reply.round, pb.MetricsReport.PHASE_EVALUATE, reply.model_version, examples, metrics
            )
            log.info("model.evaluated", model_version=reply.model_version, **metrics)
            if reply.action == pb.JoinReply.ACTION_EVALUATE:
                return
            seed = round_seed(config.seed, reply.round, self.options.client_id)
            torch.manual_seed(seed)
            ctx = TrainContext(
                reply.round,
                seed,
                self.device,
                config.strategy.proximal_mu,
                {k: torch.from_numpy(v) for k, v in global_weights.items()},
            )
            examples, metrics = self.task.train(self.model, self.data, ctx)
            self.conn.report(
                reply.round, pb.MetricsReport.PHASE_TRAIN, reply.model_version, examples, metrics
            )
            words = self._words(secure, global_weights) if secure is not None else None
            update = self._update(global_weights, None if words is None else words.view(np.float32))
            weight = float(examples)
            if self.training.spec.privacy.enabled:
                weight = self._privatize(update, config, log)
            if secure is not None:
                assert words is not None
                values = words[: len(words) - secure.params.weight_words].view(np.float32)
                lanes = words if secure.params.lane_dtype == np.uint32 else None  # else: a narrow copy
                update = {MASKED_TENSOR: secure.mask_update(values, weight, lanes)}
            compression = self.training.spec.compression  # masked lanes are already narrow
            bits = 32 if secure is not None else compression.bits
            result = self.conn.upload(
                reply.round,
                reply.model_version,
                examples,
                update,
                bits,
                compression.block_size,
                reply.deadline_unix,
            )
            log.info(
                "update.uploaded",
                examples=examples,
                bytes=result.bytes_received,
                masked=secure is not None,
                **metrics,
            )
            if secure is not None:
                self._reveal(reply.round, secure)
        except grpc.RpcError as err:
            # Refused, late, or the aggregator went away: back to joining, whose retries wait for it.
            log.warning("round.abandoned", code=err.code().name, reason=err.details())
        except ProtocolError as err:  # the aggregator asked for something a client must not give
            log.error("round.abandoned", code=err.code, reason=str(err))
