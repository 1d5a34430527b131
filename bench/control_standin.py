"""A stand-in for a training's aggregator on the Control service, for operator benches only:
rounds run on a timer (no clients, no model), so a hundred trainings fit on one machine and
the figures measured are the operator's Kubernetes API traffic, not the data plane's work.

It serves with the aggregator certificate the operator issued (Secret <training>-aggregator-tls),
so the operator's controller channel is the same mTLS channel it opens to a real aggregator.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc


@dataclass
class TimedRounds(pb_grpc.ControlServicer):
    """Every expected client is always ready; a round succeeds `round_seconds` after it starts."""

    clients: list[str]
    round_seconds: float
    version: int = 0
    current: pb.RoundState | None = None
    history: list[pb.RoundState] = field(default_factory=list)
    finished: bool = False

    def _advance(self) -> None:
        c = self.current
        if (
            c is None
            or c.phase != pb.ROUND_PHASE_TRAINING
            or time.time() < c.started_unix + self.round_seconds
        ):
            return
        c.phase = pb.ROUND_PHASE_SUCCEEDED
        c.finished_unix = time.time()
        c.reported.extend(c.participants)
        c.metrics["train_loss"] = 1.0 / (c.round + 1)
        if c.kind == pb.ROUND_KIND_TRAIN:
            self.version = c.round
            c.model_version = c.round
            self.history.append(c)

    async def StartRound(self, request: pb.StartRoundRequest, context: object) -> pb.RoundState:
        self._advance()
        if (
            self.current is not None
            and self.current.round == request.round
            and self.current.kind == request.kind
        ):
            return self.current
        self.current = pb.RoundState(
            round=request.round,
            kind=request.kind,
            phase=pb.ROUND_PHASE_TRAINING,
            participants=list(request.participants),
            started_unix=time.time(),
            min_clients=request.min_clients,
            model_version=self.version,
        )
        return self.current

    async def WatchRound(self, request: pb.WatchRequest, context: object):  # type: ignore[no-untyped-def]
        """As the aggregator's: a state when the round changed, not a heartbeat (the operator
        wakes on each one)."""
        last = None
        while True:
            self._advance()
            if self.current is not None and (self.current.phase, len(self.current.reported)) != last:
                last = (self.current.phase, len(self.current.reported))
                yield self.current
                if self.current.phase in (pb.ROUND_PHASE_SUCCEEDED, pb.ROUND_PHASE_FAILED):
                    return
            await asyncio.sleep(0.2)

    async def DropClient(self, request: pb.DropRequest, context: object) -> pb.RoundState:
        return self.current or pb.RoundState()

    async def GetRound(self, request: pb.RoundRequest, context: object) -> pb.RoundState:
        self._advance()
        for state in [*self.history, *([self.current] if self.current is not None else [])]:
            if state.round == request.round and state.kind == (request.kind or pb.ROUND_KIND_TRAIN):
                return state
        return pb.RoundState()

    async def GetStatus(self, request: pb.StatusRequest, context: object) -> pb.AggregatorStatus:
        self._advance()
        return self._status()

    async def FinishTraining(self, request: pb.FinishRequest, context: object) -> pb.AggregatorStatus:
        self.finished = True
        return self._status()

    def _status(self) -> pb.AggregatorStatus:
        status = pb.AggregatorStatus(
            model_version=self.version,
            model_digest=f"sha256:{self.version:064d}",
            ready_clients=[] if self.finished else self.clients,
            ready_count=0 if self.finished else len(self.clients),
            recent=[summary(s) for s in self.history[-2:]],
            finished=self.finished,
        )
        if self.current is not None:
            status.current.CopyFrom(summary(self.current))
        return status


def summary(state: pb.RoundState) -> pb.RoundSummary:
    return pb.RoundSummary(
        round=state.round,
        kind=state.kind,
        phase=state.phase,
        metrics=state.metrics,
        model_version=state.model_version,
        started_unix=state.started_unix,
        finished_unix=state.finished_unix,
        participants=len(state.participants),
        reported=len(state.reported),
        min_clients=state.min_clients,
    )


async def serve(port: int, rounds: TimedRounds, cert: bytes, key: bytes, ca: bytes) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_ControlServicer_to_server(rounds, server)
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    return server
