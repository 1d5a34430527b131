"""Wire quantization without SecAgg+: error bounds, unbiasedness, layout, and malformed chunks."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from fedfleet.compression import (
    data_bytes,
    decode_chunk,
    dequantize,
    iter_quantized_chunks,
    max_code,
    quantize,
)
from fedfleet.refusal import Refusal
from fedfleet.v1 import aggregator_pb2 as pb


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_round_trip_error_stays_below_one_step_of_each_block(bits: int) -> None:
    rng = np.random.default_rng(bits)
    block = 256
    # blocks of very different magnitudes: each gets its own scale
    values = (rng.standard_normal(10_000) * np.repeat(10.0 ** rng.uniform(-6, 2, 40), 256)[:10_000]).astype(
        np.float32
    )
    data, scales = quantize(values, bits, block, rng)
    assert len(data) == data_bytes(bits, len(values)) and len(scales) == 40
    decoded = dequantize(data, scales, bits, block, len(values))
    step = np.repeat(scales / max_code(bits), block)[: len(values)]
    assert np.all(np.abs(decoded - values) <= step * (1 + 1e-6))
    # every block's absmax is sent exactly, and travels without error
    for b in range(40):
        part = slice(b * block, (b + 1) * block)
        assert scales[b] == np.abs(values[part]).max()


@pytest.mark.parametrize("bits", [8, 4])
def test_stochastic_rounding_is_unbiased(bits: int) -> None:
    """The mean of many independent encodings converges to the value (a deterministic rounding
    would stay off by up to half a step); 5 sigma of the rounding noise as the tolerance."""
    rng = np.random.default_rng(1)
    values = np.concatenate([[1.0], rng.uniform(-1, 1, 255)]).astype(np.float32)  # scale 1
    trials = 2_000
    total = np.zeros(len(values))
    for _ in range(trials):
        data, scales = quantize(values, bits, 256, rng)
        total += dequantize(data, scales, bits, 256, len(values))
    step = 1.0 / max_code(bits)
    assert np.all(np.abs(total / trials - values) <= 5 * 0.5 * step / np.sqrt(trials))
    # and the one-shot error is really noise of one step, not a fixed offset
    nearest = np.round(values * max_code(bits)) / max_code(bits)
    assert np.abs(nearest - values).max() > 10 * 0.5 * step / np.sqrt(trials)


def test_four_bit_codes_pack_two_per_byte_low_nibble_first() -> None:
    values = np.array([1.0, -1.0, 0.0, 3 / 7, -5 / 7], dtype=np.float32)  # exact codes at scale 1
    data, scales = quantize(values, 4, 16, np.random.default_rng(0))
    # codes 7, -7, 0, 3, -5 stored as code + 8: 15, 1, 8, 11, 3; the odd value's high nibble is 0
    assert data == bytes([0x1F, 0xB8, 0x03]) and scales.tolist() == [1.0]
    np.testing.assert_allclose(dequantize(data, scales, 4, 16, 5), values, rtol=1e-6)


def test_an_all_zero_block_is_exact_and_chunks_hold_whole_blocks() -> None:
    weights = {"a": np.zeros((3, 100), np.float32), "b": np.arange(5000, dtype=np.float32)}
    chunks = list(iter_quantized_chunks(weights, 8, block=64, chunk_bytes=1000))
    assert [c.name for c in chunks[:1]] == ["a"] and chunks[0].values == 300
    assert all(c.values % 64 == 0 for c in chunks[1:-1])
    assert all(len(c.data) <= 1000 for c in chunks)
    np.testing.assert_array_equal(decode_chunk(chunks[0], 300), np.zeros(300, np.float32))
    b = np.concatenate([decode_chunk(c, 5000) for c in chunks if c.name == "b"])
    assert [c.offset for c in chunks if c.name == "b"] == [4 * 960 * i for i in range(6)]
    assert np.all(np.abs(b - weights["b"]) <= 5000 / 127)


def good_chunk(bits: int = 8) -> pb.TensorChunk:
    values = np.linspace(-1, 1, 100, dtype=np.float32)
    return next(iter_quantized_chunks({"w": values}, bits, block=32))


def resum(chunk: pb.TensorChunk) -> pb.TensorChunk:
    chunk.crc32 = zlib.crc32(chunk.scales, zlib.crc32(chunk.data))
    return chunk


def mangled(change: str, bits: int = 8) -> pb.TensorChunk:
    chunk = good_chunk(bits)
    if change == "short data":
        chunk.data = chunk.data[:-1]
    elif change == "missing scale":
        chunk.scales = chunk.scales[:-4]
    elif change == "nan scale":
        chunk.scales = chunk.scales[:-4] + np.float32(np.nan).tobytes()
    elif change == "negative scale":
        chunk.scales = np.float32(-1).tobytes() + chunk.scales[4:]
    elif change == "code out of range":
        chunk.data = b"\x80" + chunk.data[1:]  # int8 -128
    elif change == "nibble 0":
        chunk.data = b"\x80" + chunk.data[1:]  # low nibble 0: code -8
    elif change == "block 0":
        chunk.block_values = 0
    elif change == "no values":
        chunk.values, chunk.data = 0, b""
    elif change == "too many values":
        chunk.values = 101
        chunk.data += b"\0"
    return resum(chunk)


@pytest.mark.parametrize(
    ("change", "bits", "code", "words"),
    [
        ("short data", 8, "INVALID_ARGUMENT", "99 data bytes, 100 values need 100"),
        ("missing scale", 8, "INVALID_ARGUMENT", "4 blocks need 16"),
        ("nan scale", 8, "INVALID_ARGUMENT", "finite and non-negative"),
        ("negative scale", 8, "INVALID_ARGUMENT", "finite and non-negative"),
        ("code out of range", 8, "INVALID_ARGUMENT", "code -128 outside [-127, 127]"),
        ("nibble 0", 4, "INVALID_ARGUMENT", "4-bit code -8"),
        ("block 0", 8, "INVALID_ARGUMENT", "block_values 0"),
        ("no values", 8, "INVALID_ARGUMENT", "no values"),
        ("too many values", 8, "OUT_OF_RANGE", "end at byte 404, tensor has 400"),
    ],
)
def test_malformed_chunks_are_refused_with_a_specific_reason(
    change: str, bits: int, code: str, words: str
) -> None:
    with pytest.raises(Refusal) as refused:
        decode_chunk(mangled(change, bits), 100)
    assert refused.value.code == code and words in refused.value.message
    assert "tensor 'w'" in refused.value.message


def test_a_nonzero_padding_nibble_is_refused() -> None:
    chunk = next(iter_quantized_chunks({"w": np.ones(5, np.float32)}, 4, block=16))
    chunk.data = chunk.data[:-1] + bytes([chunk.data[-1] | 0x80])
    with pytest.raises(Refusal, match="unused high nibble"):
        decode_chunk(resum(chunk), 5)
