"""Readiness as the round driver sees it, over real gRPC on loopback: a client whose process
dies while its join waits stops being ready at once, not when its last join ages out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fedfleet.aggregator.engine import RoundEngine
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

from tests.aggregator.test_bounded_status import initial, serving, training_spec


async def ready_clients_become(control: pb_grpc.ControlStub, expected: list[str]) -> list[str]:
    """GetStatus's ready clients once they are `expected`, or as they are after about 2 s."""
    for _ in range(200):
        ready = sorted((await control.GetStatus(pb.StatusRequest())).ready_clients)
        if ready == expected:
            break
        await asyncio.sleep(0.01)
    return ready


async def test_a_client_gone_while_its_join_waits_is_no_longer_ready(tmp_path: Path) -> None:
    engine = RoundEngine("scale", training_spec(), initial, tmp_path)
    async with serving(engine) as channel:
        clients, control = pb_grpc.AggregatorStub(channel), pb_grpc.ControlStub(channel)
        calls = {
            c: clients.JoinRound(
                pb.JoinRequest(training="scale", client_id=c, site="s", session=c, wait_seconds=30)
            )
            for c in ("alive", "dies")
        }
        assert await ready_clients_become(control, ["alive", "dies"]) == ["alive", "dies"]

        calls["dies"].cancel()  # what the server sees when the client's connection goes
        # well inside the 15 s TTL of its join
        assert await ready_clients_become(control, ["alive"]) == ["alive"]
        calls["alive"].cancel()
