"""The aggregator port over the aggregator's gRPC `Control` service, for the operator (one
mTLS channel per training, `controller/aggregator_link.py`) and the local runner (its loopback
channel) alike. gRPC errors become `AggregatorUnavailable` (try again later) or
`AggregatorRefused`; replies become domain views (`fedfleet.convert`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from fedfleet import convert
from fedfleet.controller import core
from fedfleet.rounds.ports import (
    AggregatorError,
    AggregatorRefused,
    AggregatorUnavailable,
    AggregatorView,
    RoundSnapshot,
)
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

STATUS_TIMEOUT_SECONDS = 3.0
CALL_TIMEOUT_SECONDS = 10.0
DROP_TIMEOUT_SECONDS = 5.0
DETAILS_LIMIT = 300  # characters of the aggregator's message kept in ours
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _error(err: grpc.aio.AioRpcError) -> AggregatorError:
    details = (err.details() or "")[:DETAILS_LIMIT]
    message = f"{err.code().name}: {details}"
    return AggregatorUnavailable(message) if err.code() in _TRANSIENT else AggregatorRefused(message)


@dataclass
class ControlAggregator:
    stub: pb_grpc.ControlStub
    status_timeout: float = STATUS_TIMEOUT_SECONDS

    async def status(self) -> AggregatorView:
        try:
            reply: pb.AggregatorStatus = await self.stub.GetStatus(
                pb.StatusRequest(), timeout=self.status_timeout
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return convert.aggregator_view(reply)

    async def start_round(self, start: core.StartRound) -> RoundSnapshot:
        try:
            state: pb.RoundState = await self.stub.StartRound(
                convert.start_round_request(start), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return convert.round_snapshot(state)

    async def drop(self, number: int, client: str, reason: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # not a participant of that round, or it is over
            await self.stub.DropClient(
                pb.DropRequest(round=number, client_id=client, reason=reason), timeout=DROP_TIMEOUT_SECONDS
            )

    async def finish(self) -> None:
        try:
            await self.stub.FinishTraining(pb.FinishRequest(), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None

    async def watch(self, number: int) -> AsyncIterator[RoundSnapshot]:
        try:
            async for state in self.stub.WatchRound(pb.WatchRequest(round=number)):
                yield convert.round_snapshot(state)
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
