"""Quantized uploads over real gRPC: decoded into the sum, malformed chunks refused, sum untouched.

A real aggregator process with compression.bits 8 (SecAgg+ off: quantized chunks are its
wire format). Updates of constant tensors quantize exactly (every value is its block's absmax),
so the new global model must be exactly the initial one plus the weighted mean of the good
updates: whatever was refused left no trace.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest
from fedfleet.chunks import checksum
from fedfleet.compression import iter_quantized_chunks
from fedfleet.v1 import aggregator_pb2 as pb

from tests.dataplane.harness import Aggregator, chunks_of, running_aggregator
from tests.dataplane.test_update_refusals import PARTICIPANTS, finish_round_and_check, open_round


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Aggregator:
    with running_aggregator(
        tmp_path_factory.mktemp("agg"),
        rounds=100,
        secureAggregation={"enabled": False},
        compression={"bits": 8, "blockSize": 16},
    ) as agg:
        yield agg


def q8(update: dict[str, np.ndarray]) -> list[pb.TensorChunk]:
    return list(iter_quantized_chunks(update, 8, block=16, chunk_bytes=64))


def resum(chunk: pb.TensorChunk) -> None:
    chunk.crc32 = checksum(chunk.data, chunk.scales)


def mangle(kind: str) -> Callable[[list[pb.TensorChunk]], list[pb.TensorChunk]]:
    def apply(chunks: list[pb.TensorChunk]) -> list[pb.TensorChunk]:
        bad = pb.TensorChunk()
        bad.CopyFrom(chunks[-1])
        if kind == "code -128":
            bad.data = b"\x80" + bad.data[1:]
        elif kind == "scale missing":
            bad.scales = bad.scales[:-4]
        elif kind == "inf scale":
            bad.scales = np.float32(np.inf).tobytes() + bad.scales[4:]
        elif kind == "data short":
            bad.data = bad.data[:-1]
        elif kind == "past the end":
            bad.values += 16
            bad.data += bytes(16)
            bad.scales += bad.scales[-4:]
        elif kind == "scales tampered":
            bad.scales = np.float32(1e30).tobytes() + bad.scales[4:]
            return [*chunks[:-1], bad]  # checksum left as it was
        elif kind == "4-bit in an 8-bit round":
            bad.dtype = "q4"
        resum(bad)
        return [*chunks[:-1], bad]

    return apply


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [
        ("code -128", grpc.StatusCode.INVALID_ARGUMENT, "code -128 outside [-127, 127]"),
        ("scale missing", grpc.StatusCode.INVALID_ARGUMENT, "blocks need"),
        ("inf scale", grpc.StatusCode.INVALID_ARGUMENT, "scales must be finite"),
        ("data short", grpc.StatusCode.INVALID_ARGUMENT, "data bytes"),
        ("past the end", grpc.StatusCode.OUT_OF_RANGE, "tensor has"),
        ("scales tampered", grpc.StatusCode.DATA_LOSS, "checksum mismatch"),
        ("4-bit in an 8-bit round", grpc.StatusCode.INVALID_ARGUMENT, "dtype q4, expected q8"),
    ],
)
def test_malformed_quantized_chunks_are_refused_and_leave_the_sum_untouched(
    aggregator: Aggregator, kind: str, code: grpc.StatusCode, words: str
) -> None:
    number, model = open_round(aggregator)
    poisoned = mangle(kind)(q8({k: np.full_like(v, 1000.0) for k, v in model.items()}))
    with pytest.raises(grpc.RpcError) as refused:
        aggregator.upload(PARTICIPANTS[0], number, poisoned, examples=10)
    assert refused.value.code() == code
    assert words in refused.value.details(), refused.value.details()
    finish_round_and_check(aggregator, number, model, encode=q8)


def test_float32_chunks_are_refused_when_the_round_expects_8_bits(aggregator: Aggregator) -> None:
    number, model = open_round(aggregator)
    with pytest.raises(grpc.RpcError) as refused:
        aggregator.upload(PARTICIPANTS[0], number, chunks_of(model), examples=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dtype float32, expected q8 (spec.compression.bits is 8)" in refused.value.details()
    finish_round_and_check(aggregator, number, model, encode=q8)


def test_random_updates_average_within_the_quantization_bound(aggregator: Aggregator) -> None:
    number, model = open_round(aggregator)
    rng = np.random.default_rng(0)
    updates = [{k: rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in model.items()} for _ in "ab"]
    sent = [q8(u) for u in updates]
    replies = [
        aggregator.upload(c, number, s, examples=e)
        for c, s, e in zip(PARTICIPANTS, sent, (10, 30), strict=True)
    ]
    assert replies[0].bytes_received == sum(len(c.data) + len(c.scales) for c in sent[0])
    assert (
        list(aggregator.control.WatchRound(pb.WatchRequest(round=number)))[-1].phase
        == pb.ROUND_PHASE_SUCCEEDED
    )
    aggregator.start_round(number + 1, PARTICIPANTS, min_clients=2)
    aggregator.join(PARTICIPANTS[0])
    after = aggregator.download(PARTICIPANTS[0], number + 1)
    for name, value in model.items():
        mean = (10 * updates[0][name] + 30 * updates[1][name]) / 40
        step = max(np.abs(u[name]).max() for u in updates) / 127  # at most one step per client
        assert np.all(np.abs(after[name] - (value + mean)) <= step + 1e-6)
    for client in PARTICIPANTS:
        aggregator.control.DropClient(pb.DropRequest(round=number + 1, client_id=client, reason="over"))
    list(aggregator.control.WatchRound(pb.WatchRequest(round=number + 1)))
