"""The round engine in process: plain values in, an injected clock, real sums and checkpoints.

The gRPC data-plane tests (tests/dataplane) prove the same behaviour through real processes;
these run in milliseconds and move time by hand.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedfleet.aggregator.admission import UploadHeader
from fedfleet.aggregator.engine import RoundEngine
from fedfleet.aggregator.rounds import Kind, Phase
from fedfleet.aggregator.sums import MaskedSum
from fedfleet.api import parse_training
from fedfleet.chunks import Chunk
from fedfleet.refusal import Refusal

CLIENTS = ["a", "b"]
SHAPES = {"bias": (3,), "weight": (4, 5)}


class ManualClock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.time = now
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self.time

    async def sleep_until(self, when: float) -> None:
        while self.time < when:
            await self._moved.wait()

    async def advance(self, seconds: float) -> None:
        self.time += seconds
        self._moved.set()
        self._moved = asyncio.Event()
        for _ in range(5):  # let woken tasks run to their next await
            await asyncio.sleep(0)


def engine_for(tmp_path: Path, clock: ManualClock, **spec: Any) -> RoundEngine:
    training = parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "unit"},
            "spec": {
                "task": {"name": "digits-mlp"},
                "rounds": 3,
                "sites": {"names": ["s"]},
                "secureAggregation": {"enabled": False},
                **spec,
            },
        }
    )
    initial = {name: np.full(shape, 0.5, dtype=np.float32) for name, shape in SHAPES.items()}
    return RoundEngine("unit", training.spec, lambda: initial, tmp_path, clock=clock)


def chunk(name: str, values: np.ndarray, offset: int = 0, shape: tuple[int, ...] | None = None) -> Chunk:
    data = values.tobytes()
    return Chunk(name, values.dtype.name, shape or SHAPES[name], offset, data, zlib.crc32(data))


def update(scale: float) -> list[Chunk]:
    return [chunk(n, np.full(int(np.prod(s)), scale, dtype=np.float32)) for n, s in sorted(SHAPES.items())]


async def stream(chunks: Iterable[Chunk]) -> AsyncIterator[Chunk]:
    for c in chunks:
        yield c


async def upload(engine: RoundEngine, client: str, chunks: list[Chunk], examples: int = 1) -> None:
    header = UploadHeader("unit", client, 1, examples, 0, client)
    await engine.receive_update(header, stream(chunks))


async def open_round(engine: RoundEngine, timeout: float = 60.0) -> None:
    engine.start_round(1, Kind.TRAIN, CLIENTS, timeout, min_clients=2)
    for client in CLIENTS:
        assert (await engine.join("unit", client, client, 0)).action == "train"


async def test_a_round_fails_when_the_clock_passes_its_deadline(tmp_path: Path) -> None:
    clock = ManualClock()
    engine = engine_for(tmp_path, clock)
    await open_round(engine, timeout=30)
    await upload(engine, "a", update(1.0))
    await clock.advance(29)
    assert engine.current is not None and engine.current.phase == Phase.TRAINING
    await clock.advance(2)
    round_ = engine.current
    assert round_.phase == Phase.FAILED
    assert round_.reason == "deadline passed with 1 of 2 participants reported; minClients is 2"
    assert round_.finished == clock.now() and engine.model_version == 0


async def test_a_refused_upload_leaves_the_mean_exact(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, ManualClock())
    await open_round(engine)
    poisoned = update(1000.0)
    bad = poisoned[-1]
    poisoned[-1] = Chunk(bad.name, bad.dtype, bad.shape, bad.offset, bad.data, bad.crc32 ^ 1)
    with pytest.raises(Refusal, match="checksum mismatch"):
        await upload(engine, "a", poisoned, examples=10)
    with pytest.raises(Refusal, match="incomplete update"):
        await upload(engine, "a", update(1000.0)[:1], examples=10)
    await upload(engine, "a", update(1.0), examples=10)
    await upload(engine, "b", update(4.0), examples=30)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if engine.current is not None and engine.current.phase == Phase.SUCCEEDED:
            break
    assert engine.model_version == 1
    for name, value in engine.store.latest().load_weights().items():  # 0.5 + (10 * 1 + 30 * 4) / 40
        np.testing.assert_allclose(value, np.full(SHAPES[name], 3.75, dtype=np.float32), rtol=1e-6)


async def test_clients_are_ready_for_the_ttl_of_the_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    engine = engine_for(tmp_path, clock)
    assert (await engine.join("unit", "a", "s1", 0)).action == "wait"
    assert engine.ready_clients() == ["a"]
    await clock.advance(16)
    assert engine.ready_clients() == []


async def test_a_client_dropped_as_down_is_not_ready_until_it_joins_again(tmp_path: Path) -> None:
    """Its last join predates its death: counting it ready would start the next round with a
    process that is still starting (and drop it there if it starts late)."""
    clock = ManualClock()
    engine = engine_for(tmp_path, clock)
    engine.start_round(1, Kind.TRAIN, CLIENTS, 60, min_clients=1)
    assert (await engine.join("unit", "a", "a-1", 0)).action == "train"
    assert (await engine.join("unit", "b", "b-1", 0)).action == "train"
    assert engine.ready_clients() == ["a", "b"]  # within the TTL of their joins
    engine.drop(1, "b", "client process exited with code -9")
    assert engine.ready_clients() == ["a"]
    assert (await engine.join("unit", "b", "b-2", 0)).action == "wait"  # restarted: left out of round 1
    assert engine.ready_clients() == ["a", "b"]


async def test_a_client_whose_waiting_join_is_cancelled_is_not_ready_unless_another_join_waits(
    tmp_path: Path,
) -> None:
    """A process that dies between rounds leaves a join call waiting; its cancellation says the
    client is gone (no round should start counting on it for the rest of the ready TTL)."""
    engine = engine_for(tmp_path, ManualClock())
    died = asyncio.create_task(engine.join("unit", "a", "a-1", 30))
    await asyncio.sleep(0.01)
    assert engine.ready_clients() == ["a"]
    died.cancel()
    await asyncio.gather(died, return_exceptions=True)
    assert engine.ready_clients() == []

    old, new = (asyncio.create_task(engine.join("unit", "b", s, 30)) for s in ("b-1", "b-2"))
    await asyncio.sleep(0.01)
    old.cancel()  # a restarted process joined while its dead self's call still waited
    await asyncio.gather(old, return_exceptions=True)
    assert engine.ready_clients() == ["b"]
    new.cancel()
    await asyncio.gather(new, return_exceptions=True)
    assert engine.ready_clients() == []


async def test_evaluations_are_written_whole(tmp_path: Path) -> None:
    clock = ManualClock()
    engine = engine_for(tmp_path, clock)
    engine.start_round(0, Kind.EVALUATE, ["a"], 60, min_clients=1)
    await engine.join("unit", "a", "a", 0)
    engine.report_metrics("unit", "a", 0, Kind.EVALUATE, 0, 7, {"loss": 0.25})
    for _ in range(50):
        await asyncio.sleep(0.01)
        if engine.current is not None and engine.current.phase == Phase.SUCCEEDED:
            break
    written = json.loads((tmp_path / "evaluations" / "version-000000.json").read_text())
    assert written["metrics"] == {"eval_loss": 0.25} and written["model_version"] == 0
    assert not list((tmp_path / "evaluations").glob(".tmp-*"))


async def test_a_masked_upload_refused_part_way_is_taken_out_exactly(tmp_path: Path) -> None:
    masked = MaskedSum(10, np.dtype(np.uint32), tmp_path)
    masked.total[:] = np.arange(10, dtype=np.uint32) * 0x9E3779B9
    before = masked.total.copy()
    shape = (10,)
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**32, 10, dtype=np.uint64).astype(np.uint32)
    partial = await masked.open_upload(1.0)
    partial.add(chunk("secagg.masked", words[:4], 0, shape))
    partial.add(chunk("secagg.masked", words[4:8], 16, shape))
    assert not np.array_equal(masked.total, before)  # folded as they arrived
    with pytest.raises(Refusal, match="arrive once, in order"):
        partial.add(chunk("secagg.masked", words[8:], 0, shape))
    partial.abort()
    np.testing.assert_array_equal(masked.total, before)

    complete = await masked.open_upload(1.0)
    for begin in (0, 4, 8):
        complete.add(chunk("secagg.masked", words[begin : begin + 4], 4 * begin, shape))
    complete.commit()
    np.testing.assert_array_equal(masked.total, before + words)  # mod 2^32

    in_flight = await masked.open_upload(1.0)
    in_flight.add(chunk("secagg.masked", words[:4], 0, shape))
    masked.close_uploads()  # the round closed under it
    np.testing.assert_array_equal(masked.total, before + words)
    in_flight.abort()  # the upload's own clean-up afterwards changes nothing
    np.testing.assert_array_equal(masked.total, before + words)


async def test_a_large_masked_upload_refused_part_way_is_taken_out_exactly(tmp_path: Path) -> None:
    """The undo journal of a model-sized upload spans blocks written to disk and the block
    still in memory; and a journal reused by the next upload undoes that upload's words only."""
    size = 1_000_003
    shape = (size,)
    masked = MaskedSum(size, np.dtype(np.uint32), tmp_path)
    rng = np.random.default_rng(11)
    masked.total[:] = rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32)
    before = masked.total.copy()
    first, second = (rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32) for _ in range(2))
    step = 77_777  # chunk edges nowhere near the journal's block edges
    for words, upto in ((first, 900_000), (second, 300_000)):
        upload = await masked.open_upload(1.0)
        for begin in range(0, upto, step):
            upload.add(chunk("secagg.masked", words[begin : min(begin + step, upto)], 4 * begin, shape))
        upload.abort()
        np.testing.assert_array_equal(masked.total, before)


async def test_an_upload_waiting_for_a_chunk_is_refused_as_soon_as_its_round_closes(tmp_path: Path) -> None:
    clock = ManualClock()
    engine = engine_for(tmp_path, clock)
    await open_round(engine, timeout=30)
    stalled = asyncio.Event()

    async def first_chunk_then_nothing() -> AsyncIterator[Chunk]:
        yield update(1.0)[0]
        await asyncio.Event().wait()  # a client that stops sending, its stream still open
        yield update(1.0)[1]

    async def upload_stalling() -> None:
        header = UploadHeader("unit", "a", 1, 1, 0, "a")
        stalled.set()
        await engine.receive_update(header, first_chunk_then_nothing())

    stalling = asyncio.create_task(upload_stalling())
    await stalled.wait()
    await asyncio.sleep(0.05)
    await clock.advance(31)  # the deadline closes the round; the idle limit (60 s) is far off
    with pytest.raises(Refusal, match="round 1 closed during the upload") as refused:
        await asyncio.wait_for(stalling, 2)
    assert refused.value.code == "DEADLINE_EXCEEDED"
    assert engine.current is not None and engine.current.phase == Phase.FAILED
