"""The controller's contract at scale: 1,000 clients and 200 completed rounds, the real
aggregator service over real gRPC on loopback.

The 200 rounds are built through the aggregator's own engine and checkpoints (each with 1,000
participants, two of them reporting, a DP release, a signed lineage record), with time moved by
hand; then a fresh engine loads that state (as after a restart), the gRPC server serves it, a
thousand clients say they are ready, and the round driver the operator and the local runner
share (`rounds/driver.py`, through the gRPC aggregator port) drives round 201 to its end and
starts round 202 (in-memory fakes of the fleet and recorder ports only). Before this contract,
GetStatus carried every round in full and was 7 MB here (past gRPC's default 4 MiB receive
limit at about 115 rounds), rebuilt on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fedfleet import convert
from fedfleet.aggregator import service
from fedfleet.aggregator.admission import UploadHeader
from fedfleet.aggregator.engine import RoundEngine
from fedfleet.aggregator.rounds import Kind, Phase
from fedfleet.api import parse_training
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.chunks import GRPC_OPTIONS, Chunk, ChunkAssembler, iter_chunks
from fedfleet.controller import core
from fedfleet.provenance.verify import verify_state
from fedfleet.rounds.control import ControlAggregator
from fedfleet.rounds.driver import Bookkeeping, RoundDriver, Step
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

from tests.aggregator.test_engine import ManualClock
from tests.rounds.fakes import FakeFleet, FakeRecorder

SITES, PER_SITE, BUILT_ROUNDS = 10, 100, 200
SITE_NAMES = [f"hospital-{s:02d}-eu-west" for s in range(SITES)]
CLIENTS = [f"{site}-client-{i:03d}" for site in SITE_NAMES for i in range(PER_SITE)]  # ~36 characters
POPULATION = len(CLIENTS)
SHAPES = {"bias": (3,), "weight": (4, 5)}
STATUS_LIMIT = 64 * 1024


def training_spec() -> FederatedTrainingSpec:
    return parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "scale"},
            "spec": {
                "task": {"name": "digits-mlp"},
                "rounds": BUILT_ROUNDS + 2,
                "sites": {"names": SITE_NAMES},
                "clientsPerSite": PER_SITE,
                "minClients": 2,
                "roundTimeoutSeconds": 3,
                "secureAggregation": {"enabled": False},
                "privacy": {"enabled": True, "mode": "central", "clipNorm": 1.0, "noiseMultiplier": 1.0},
            },
        }
    ).spec


def small_update() -> dict[str, np.ndarray]:
    return {name: np.full(shape, 0.01, dtype=np.float32) for name, shape in SHAPES.items()}


def engine_chunks() -> list[Chunk]:
    """The update as the engine receives it from the wire decoder."""
    out = []
    for name, values in sorted(small_update().items()):
        data = values.tobytes()
        out.append(Chunk(name, "float32", values.shape, 0, data, zlib.crc32(data)))
    return out


async def chunks(items: list[Chunk]) -> AsyncIterator[Chunk]:
    for item in items:
        yield item


def initial() -> dict[str, np.ndarray]:
    return {name: np.full(shape, 0.5, dtype=np.float32) for name, shape in SHAPES.items()}


async def build_history(
    state: Path,
    spec: FederatedTrainingSpec,
    key: Ed25519PrivateKey,
    clients: list[str] = CLIENTS,
    rounds: int = BUILT_ROUNDS,
) -> None:
    """Rounds of every client through the engine: two report, the deadline closes the round."""
    clock = ManualClock()
    engine = RoundEngine("scale", spec, initial, state, lineage_key=key, clock=clock)
    for number in range(1, rounds + 1):
        engine.start_round(number, Kind.TRAIN, clients, 60, 2, population=POPULATION)
        for client in clients[:2]:
            await engine.join("scale", client, client, 0)
            header = UploadHeader("scale", client, number, 5, number - 1, client)
            await engine.receive_update(header, chunks(engine_chunks()))
        await clock.advance(61)
        while engine.current is not None and engine.current.phase not in (Phase.SUCCEEDED, Phase.FAILED):
            await asyncio.sleep(0.001)
        assert engine.model_version == number, engine.current.reason if engine.current else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(engine: RoundEngine) -> AsyncIterator[grpc.aio.Channel]:
    """The aggregator's gRPC server on a loopback port, and a channel to it."""
    address = f"127.0.0.1:{free_port()}"
    ready = asyncio.Event()
    server = asyncio.create_task(service.serve(engine, address, 1 << 16, ready=ready, insecure_local=True))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        async with grpc.aio.insecure_channel(address, options=GRPC_OPTIONS) as channel:
            yield channel
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def join(channel: grpc.aio.Channel, clients: list[str]) -> None:
    """Clients saying they are ready (a JoinRound that does not wait)."""
    stub = pb_grpc.AggregatorStub(channel)
    for begin in range(0, len(clients), 100):
        await asyncio.gather(
            *(
                stub.JoinRound(pb.JoinRequest(training="scale", client_id=c, site="s", session=c))
                for c in clients[begin : begin + 100]
            )
        )


async def client_round(channel: grpc.aio.Channel, client: str, number: int) -> None:
    """One client's part as `fedfleet client` plays it: join, download, upload a small update."""
    stub = pb_grpc.AggregatorStub(channel)
    reply = await stub.JoinRound(
        pb.JoinRequest(training="scale", client_id=client, site="s", session=client, wait_seconds=5)
    )
    assert reply.action == pb.JoinReply.ACTION_TRAIN and reply.round == number
    assert convert.round_config_from_pb(reply.config).secure_aggregation is None
    assembler = ChunkAssembler()
    async for chunk in stub.DownloadModel(pb.ModelRequest(training="scale", client_id=client, round=number)):
        assembler.add(chunk)
    assert set(assembler.result()) == set(SHAPES)
    header = pb.UpdateHeader(
        training="scale",
        client_id=client,
        round=number,
        num_examples=5,
        base_version=reply.model_version,
        session=client,
    )
    update = iter_chunks(small_update(), 1 << 16)
    messages = [pb.UpdateMessage(header=header), *(pb.UpdateMessage(chunk=c) for c in update)]
    await stub.UploadUpdate(iter(messages))


async def test_get_status_stays_under_64_kib_with_1000_clients_and_200_rounds_and_rounds_go_on(
    tmp_path: Path,
) -> None:
    spec, key, state = training_spec(), Ed25519PrivateKey.generate(), tmp_path / "state"
    await build_history(state, spec, key)

    engine = RoundEngine("scale", spec, initial, state, lineage_key=key)  # a restarted aggregator
    async with serving(engine) as channel:
        control = pb_grpc.ControlStub(channel)
        await join(channel, CLIENTS)

        status = await control.GetStatus(pb.StatusRequest())
        assert status.ByteSize() < STATUS_LIMIT, status.ByteSize()
        assert status.model_version == BUILT_ROUNDS and status.ready_count == POPULATION
        assert 0 < len(status.ready_clients) < POPULATION  # a first page: the rest is paged
        assert [r.round for r in status.recent] == [BUILT_ROUNDS - 1, BUILT_ROUNDS]
        assert [(g.privacy.expected_clients, g.privacy.survivors, g.rounds) for g in status.released] == [
            (POPULATION, 2, BUILT_ROUNDS)
        ]

        port = ControlAggregator(control, status_timeout=10, population=POPULATION)
        history = await port.completed_rounds()
        assert [r.number for r in history] == list(range(1, BUILT_ROUNDS + 1))
        assert all(len(r.participants) == POPULATION and len(r.reported) == 2 for r in history)

        # the shared round driver (the operator's and the local runner's) over this aggregator
        recorder = FakeRecorder()
        driver = RoundDriver(spec, port, FakeFleet(set(CLIENTS)), recorder)
        book = Bookkeeping()
        step = await driver.step(book)
        assert isinstance(step, Step) and isinstance(step.action, core.StartRound)
        assert step.action.number == BUILT_ROUNDS + 1 and len(step.action.participants) == POPULATION
        assert sorted(step.view.ready_clients) == sorted(CLIENTS)  # every page of them

        during = await control.GetStatus(pb.StatusRequest())
        assert during.ByteSize() < STATUS_LIMIT, during.ByteSize()
        assert during.current.round == BUILT_ROUNDS + 1 and during.current.participants == POPULATION
        running = await driver.step(book)
        assert isinstance(running, Step) and isinstance(running.action, core.WatchRound)
        assert running.view.current is not None and len(running.view.current.clients) == POPULATION

        await asyncio.gather(*(client_round(channel, c, BUILT_ROUNDS + 1) for c in CLIENTS[:2]))
        states = [s async for s in control.WatchRound(pb.WatchRequest(round=BUILT_ROUNDS + 1))]
        assert states[-1].phase == pb.ROUND_PHASE_SUCCEEDED, states[-1]
        after = await control.GetStatus(pb.StatusRequest())
        assert after.ByteSize() < STATUS_LIMIT and after.model_version == BUILT_ROUNDS + 1
        assert [g.rounds for g in after.released] == [BUILT_ROUNDS + 1]

        next_round = await driver.step(book)  # records round 201's end, starts round 202
        assert isinstance(next_round, Step) and isinstance(next_round.action, core.StartRound)
        assert next_round.action.number == BUILT_ROUNDS + 2
        assert ("succeeded", "train", BUILT_ROUNDS + 1) in recorder.log
        expected = driver.epsilon(next_round.view.released)

    # every lineage record carries the training's epsilon after its round, as the driver computes it
    # every lineage record carries the training's epsilon after its round, as the controller computes it
    lineage = json.loads((state / "rounds" / f"round-{BUILT_ROUNDS + 1:06d}" / "lineage.json").read_text())
    assert expected is not None and lineage["record"]["epsilon"] == expected
    first = json.loads((state / "rounds" / "round-000001" / "lineage.json").read_text())
    assert 0 < first["record"]["epsilon"] < expected
    assert verify_state(state, key.public_key(), require_signature=True).ok


async def test_pages_resume_where_they_stopped_and_a_bad_page_request_is_refused(tmp_path: Path) -> None:
    spec, key, state = training_spec(), Ed25519PrivateKey.generate(), tmp_path / "state"
    few = CLIENTS[:5]
    await build_history(state, spec, key, few, rounds=5)
    engine = RoundEngine("scale", spec, initial, state, lineage_key=key)
    async with serving(engine) as channel:
        control = pb_grpc.ControlStub(channel)
        pages, token = [], ""
        for _ in range(4):
            page = await control.ListRounds(pb.ListRoundsRequest(page_size=2, page_token=token))
            pages.append([r.round for r in page.rounds])
            assert page.total == 5
            token = page.next_page_token
            if not token:
                break
        assert pages == [[1, 2], [3, 4], [5]]

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await control.ListRounds(pb.ListRoundsRequest(page_token="round-3"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "page_token is not one ListRounds gave"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await control.ListRounds(pb.ListRoundsRequest(page_size=101))
        assert refused.value.details() == "page_size 101 is above the 100 rounds a page holds"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await control.GetRound(pb.RoundRequest(round=9))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert len((await control.GetRound(pb.RoundRequest(round=3))).participants) == len(few)

        # ready clients: a client arriving between pages neither repeats nor hides another one
        await join(channel, few)
        first = await control.ListReadyClients(pb.ListReadyRequest(page_size=2))
        assert list(first.client_ids) == sorted(few)[:2] and first.total == 5
        await join(channel, ["a-newcomer"])  # sorts before every page already read
        rest, token = [], first.next_page_token
        while token:
            page = await control.ListReadyClients(pb.ListReadyRequest(page_size=2, page_token=token))
            rest.extend(page.client_ids)
            token = page.next_page_token
        assert rest == sorted(few)[2:]
        view = await ControlAggregator(control).status()
        assert sorted(view.ready_clients) == sorted([*few, "a-newcomer"])
