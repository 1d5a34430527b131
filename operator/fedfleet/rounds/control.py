"""The aggregator port over the aggregator's gRPC `Control` service, for the operator (one
mTLS channel per training, `controller/aggregator_link.py`) and the local runner (its loopback
channel) alike. gRPC errors become `AggregatorUnavailable` (try again later) or
`AggregatorRefused`; replies become domain views (`fedfleet.convert`).

GetStatus is bounded (a first page of ready clients, rounds as summaries): the status view
pages the rest of the ready clients (the driver starts a round with all of them) and reads
the current round in full (GetRound: what the recorder records); `completed_rounds` pages
every completed round. Every loop is bounded, whatever the aggregator answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
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
MAX_PAGES = 1000  # of either listing: 5 million ready clients, 100,000 rounds
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _error(err: grpc.aio.AioRpcError) -> AggregatorError:
    details = (err.details() or "")[:DETAILS_LIMIT]
    message = f"{err.code().name}: {details}"
    return AggregatorUnavailable(message) if err.code() in _TRANSIENT else AggregatorRefused(message)


@dataclass
class ControlAggregator:
    stub: pb_grpc.ControlStub
    status_timeout: float = STATUS_TIMEOUT_SECONDS
    population: int = 0  # clients cohorts are drawn from: the aggregator's epsilon for lineage

    async def status(self) -> AggregatorView:
        try:
            reply = await self._status()
            current: pb.RoundState | None = None
            if reply.HasField("current"):
                current = await self.stub.GetRound(
                    pb.RoundRequest(round=reply.current.round, kind=reply.current.kind),
                    timeout=self.status_timeout,
                )
                if convert.is_final(current) and not convert.is_final(reply.current):
                    reply = await self._status()  # it ended in between: its release is in this one
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return convert.aggregator_view(reply, current)

    async def _status(self) -> pb.AggregatorStatus:
        """GetStatus with its `ready_clients` completed page by page (ListReadyClients)."""
        timeout = self.status_timeout
        status: pb.AggregatorStatus = await self.stub.GetStatus(pb.StatusRequest(), timeout=timeout)
        ready = list(status.ready_clients)
        token = ready[-1] if ready else ""
        for _ in range(MAX_PAGES):
            if len(ready) >= status.ready_count:
                break
            page: pb.ListReadyReply = await self.stub.ListReadyClients(
                pb.ListReadyRequest(page_token=token), timeout=timeout
            )
            ready.extend(page.client_ids)
            token = page.next_page_token
            if not token:
                break
        del status.ready_clients[:]
        status.ready_clients.extend(sorted(set(ready)))
        return status

    async def completed_rounds(self) -> list[RoundSnapshot]:
        """Every completed training round in full, in order (ListRounds, page by page)."""
        rounds: list[RoundSnapshot] = []
        token = ""
        try:
            for _ in range(MAX_PAGES):
                page: pb.ListRoundsReply = await self.stub.ListRounds(
                    pb.ListRoundsRequest(page_token=token), timeout=CALL_TIMEOUT_SECONDS
                )
                rounds.extend(convert.round_snapshot(state) for state in page.rounds)
                token = page.next_page_token
                if not token:
                    break
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return rounds

    async def start_round(self, start: core.StartRound) -> RoundSnapshot:
        try:
            state: pb.RoundState = await self.stub.StartRound(
                convert.start_round_request(start, self.population), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return convert.round_snapshot(state)

    async def drop(self, number: int, client: str, reason: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # not a participant of that round, or it is over
            await self.stub.DropClient(
                pb.DropRequest(round=number, client_id=client, reason=reason), timeout=DROP_TIMEOUT_SECONDS
            )

    async def revoke_sites(self, sites: Mapping[str, str]) -> list[str]:
        """The whole set of sites whose clients the aggregator refuses, each with why; returns the
        clients it dropped or forgot now."""
        request = pb.RevokeSitesRequest(
            sites=[pb.RevokedSite(site=site, reason=why) for site, why in sorted(sites.items())]
        )
        try:
            reply: pb.RevokeSitesReply = await self.stub.RevokeSites(request, timeout=self.status_timeout)
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return list(reply.dropped_clients)

    async def abort(self, number: int, reason: str) -> RoundSnapshot:
        try:
            state: pb.RoundState = await self.stub.AbortRound(
                pb.AbortRequest(round=number, reason=reason), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        return convert.round_snapshot(state)

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
