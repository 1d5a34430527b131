"""The client's gRPC calls, with bounded exponential-backoff retries on transient failures.

Every call has a deadline (a stream's is the round's deadline: past it the aggregator refuses
the work anyway) and the channel sends keepalive pings, so a client never waits forever on a
dead aggregator or a half-open connection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_delay, wait_exponential

from fedfleet.chunks import GRPC_OPTIONS, ChunkAssembler
from fedfleet.compression import DEFAULT_BLOCK, encode_update
from fedfleet.identity.credentials import channel_credentials, channel_options
from fedfleet.identity.files import TlsConfigError, TlsFiles, is_loopback
from fedfleet.logs import get_logger
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc
from fedfleet.wire import parse_tensor_chunk, update_message

Weights = dict[str, np.ndarray]
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
JOIN_WAIT_SECONDS = 5
REPORT_SECONDS = 30
SECAGG_SECONDS = 180  # a stage long-polls until every participant spoke or its deadline
STREAM_SECONDS = 3600  # a download or upload with no round deadline to go by
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),  # ping an idle connection every 20 s
    ("grpc.keepalive_timeout_ms", 10_000),  # and drop it when the ping is not answered in 10 s
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def until(deadline_unix: float, fallback: float = STREAM_SECONDS) -> float:
    """Seconds left to a round's deadline (at least 1; `fallback` when there is none)."""
    return max(1.0, deadline_unix - time.time()) if deadline_unix > 0 else fallback


def _is_transient(err: BaseException) -> bool:
    return isinstance(err, grpc.RpcError) and err.code() in TRANSIENT


class AggregatorConnection:
    """One client's view of the aggregator; a new process is a new session. With `tls` the
    channel is mTLS and is rebuilt when the certificate files change (a rotated Secret)."""

    def __init__(
        self,
        address: str,
        training: str,
        client_id: str,
        site: str,
        connect_timeout: float,
        tls: TlsFiles | None = None,
        server_name: str = "",
    ) -> None:
        self.training, self.client_id, self.site = training, client_id, site
        self.address, self.tls, self.server_name = address, tls, server_name
        self.session = uuid.uuid4().hex
        self.log = get_logger(component="client", training=training, client=client_id, site=site)
        if tls is None and not is_loopback(address):
            raise TlsConfigError(
                f"--aggregator {address}: plaintext only to loopback; give --tls-cert/key/ca"
            )
        if tls is None:
            self.log.warning("transport.plaintext", address=address, reason="no --tls-*: loopback only")
        self._bind(self._open())
        self._retrying = retry(
            retry=retry_if_exception(_is_transient),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(connect_timeout),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _open(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.address, options=[*GRPC_OPTIONS, *KEEPALIVE_OPTIONS])
        creds = channel_credentials(*self.tls.read())
        return grpc.secure_channel(
            self.address,
            creds,
            options=[*GRPC_OPTIONS, *KEEPALIVE_OPTIONS, *channel_options(self.server_name)],
        )

    def _bind(self, channel: grpc.Channel) -> None:
        """The stubs, and the two bulk streams with the `wire` codecs: chunks decoded in place
        from gRPC's bytes, and sent serialized with one copy of their data."""
        self.channel = channel
        self.stub = pb_grpc.AggregatorStub(channel)
        self._download = channel.unary_stream(
            "/fedfleet.v1.Aggregator/DownloadModel",
            request_serializer=pb.ModelRequest.SerializeToString,
            response_deserializer=parse_tensor_chunk,
        )
        self._upload = channel.stream_unary(
            "/fedfleet.v1.Aggregator/UploadUpdate",
            request_serializer=None,
            response_deserializer=pb.UploadReply.FromString,
        )

    def _refresh(self) -> None:
        """Between rounds: pick up a rotated certificate."""
        if self.tls is not None and self.tls.changed():
            self.log.info("tls.reloaded", cert=str(self.tls.cert))
            self.channel.close()
            self._bind(self._open())

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        code = err.code().name if isinstance(err, grpc.RpcError) else type(err).__name__
        self.log.warning(
            "aggregator.retry",
            attempt=state.attempt_number,
            code=code,
            wait_seconds=round(state.next_action.sleep if state.next_action else 0, 2),
        )

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(fn)(*args, **kwargs)

    def join(self) -> pb.JoinReply:
        self._refresh()
        request = pb.JoinRequest(
            training=self.training,
            client_id=self.client_id,
            site=self.site,
            session=self.session,
            wait_seconds=JOIN_WAIT_SECONDS,
        )
        reply: pb.JoinReply = self.call(self.stub.JoinRound, request, timeout=JOIN_WAIT_SECONDS + 10)
        return reply

    def download(
        self, round_number: int, deadline_unix: float = 0.0, reuse: Weights | None = None
    ) -> Weights:
        """The round's global weights, written into `reuse`'s arrays where they fit (the caller
        gives them up: a failed download leaves them part-written)."""

        def fetch() -> Weights:
            assembler = ChunkAssembler(reuse)
            request = pb.ModelRequest(training=self.training, client_id=self.client_id, round=round_number)
            for chunk in self._download(request, timeout=until(deadline_unix)):
                assembler.add(chunk)
            return assembler.result()

        weights: Weights = self.call(fetch)
        return weights

    def report(
        self,
        round_number: int,
        phase: pb.MetricsReport.Phase,
        model_version: int,
        examples: int,
        metrics: dict[str, float],
    ) -> None:
        report = pb.MetricsReport(
            training=self.training,
            client_id=self.client_id,
            round=round_number,
            phase=phase,
            model_version=model_version,
            num_examples=examples,
            metrics=metrics,
        )
        self.call(self.stub.ReportMetrics, report, timeout=REPORT_SECONDS)

    def upload(
        self,
        round_number: int,
        base_version: int,
        examples: int,
        update: Weights,
        bits: int = 32,
        block: int = DEFAULT_BLOCK,
        deadline_unix: float = 0.0,
    ) -> pb.UploadReply:
        """Stream the update: float32 (or a masked upload's lanes) at 32 bits, quantized below."""
        header = pb.UpdateHeader(
            training=self.training,
            client_id=self.client_id,
            round=round_number,
            num_examples=examples,
            base_version=base_version,
            session=self.session,
        )

        def messages() -> Iterator[bytes]:
            yield pb.UpdateMessage(header=header).SerializeToString()
            for chunk in encode_update(update, bits, block):
                yield update_message(chunk)

        # not retried: a broken stream is refused whole
        reply: pb.UploadReply = self._upload(messages(), timeout=until(deadline_unix))
        return reply

    def secagg(self, round_number: int, stage: pb.SecAggRequest.Stage, payload: bytes) -> pb.SecAggReply:
        request = pb.SecAggRequest(
            training=self.training,
            client_id=self.client_id,
            round=round_number,
            session=self.session,
            stage=stage,
            payload=payload,
        )
        reply: pb.SecAggReply = self.call(self.stub.SecAgg, request, timeout=SECAGG_SECONDS)
        return reply

    def close(self) -> None:
        self.channel.close()
