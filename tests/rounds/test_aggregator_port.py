"""The aggregator port's contract, run against the in-memory fake the driver's unit tests use
and against the real one (`rounds/control.py` over gRPC to an aggregator process), so the fake
cannot drift from what the driver meets on a cluster or in a local run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from fedfleet.controller import core
from fedfleet.rounds.control import ControlAggregator
from fedfleet.rounds.ports import AggregatorPort, AggregatorRefused, AggregatorUnavailable, AggregatorView
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

from tests.dataplane.harness import free_port, running_aggregator
from tests.rounds.fakes import Clock, FakeAggregator

FIRST = core.StartRound(1, "train", ("site-a-0", "site-b-0"), 60, 2)


async def until_ended(port: AggregatorPort) -> AggregatorView:
    """The aggregator closes a round in the background once its participants are accounted for."""
    for _ in range(100):
        view = await port.status()
        if view.current is not None and not view.current.active:
            return view
        await asyncio.sleep(0.05)
    raise TimeoutError("the round did not end")


async def check_contract(port: AggregatorPort) -> None:
    view = await port.status()
    assert (view.model_version, view.current, view.finished) == (0, None, False)
    started = await port.start_round(FIRST)
    assert (started.number, started.kind, started.participants, started.active) == (
        1,
        "train",
        FIRST.participants,
        True,
    )
    assert (await port.start_round(FIRST)).number == 1, "a repeated start is the same round"
    with pytest.raises(AggregatorRefused, match="FAILED_PRECONDITION"):
        await port.start_round(core.StartRound(2, "train", FIRST.participants, 60, 2))
    await port.drop(1, "site-z-9", "not a participant: no error")
    await port.drop(7, "site-a-0", "not the open round: no error")
    await port.drop(1, "site-a-0", "client process exited with code 1")
    view = await port.status()
    assert view.current is not None and view.current.dropped == ("site-a-0",) and view.current.active
    await port.drop(1, "site-b-0", "client process exited with code 1")
    ended = (await until_ended(port)).current
    assert ended is not None and ended.phase == "Failed" and ended.reason
    assert ended.dropped == ("site-a-0", "site-b-0") and ended.reported == ()
    assert (await port.start_round(FIRST)).active, "a failed round runs again"
    aborted = await port.abort(1, "the training is suspended")
    assert (aborted.phase, aborted.aborted) == ("Failed", True)
    assert aborted.reason == "aborted: the training is suspended"
    assert (await port.abort(1, "again")).reason == aborted.reason, "an ended round stays as it is"
    with pytest.raises(AggregatorRefused, match="NOT_FOUND"):
        await port.abort(5, "not the current round")
    await port.finish()
    assert (await port.status()).finished
    with pytest.raises(AggregatorRefused):
        await port.start_round(FIRST)


@pytest.mark.unit
async def test_the_fake_aggregator_keeps_the_contract() -> None:
    fake = FakeAggregator(Clock())
    await check_contract(fake)
    fake.reachable = False
    with pytest.raises(AggregatorUnavailable):
        await fake.status()


@pytest.fixture
def aggregator_address(tmp_path: Path) -> Iterator[str]:
    with running_aggregator(tmp_path, secureAggregation={"enabled": False}) as aggregator:
        yield aggregator.address


@pytest.fixture
async def control(aggregator_address: str) -> AsyncIterator[ControlAggregator]:
    channel = grpc.aio.insecure_channel(aggregator_address)
    yield ControlAggregator(pb_grpc.ControlStub(channel))
    await channel.close(grace=None)


async def test_the_grpc_aggregator_port_keeps_the_contract(control: ControlAggregator) -> None:
    await check_contract(control)


async def test_an_aggregator_that_is_not_there_is_unavailable_not_refused() -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(AggregatorUnavailable, match="UNAVAILABLE"):
            await ControlAggregator(pb_grpc.ControlStub(channel), status_timeout=2).status()
    finally:
        await channel.close(grace=None)
