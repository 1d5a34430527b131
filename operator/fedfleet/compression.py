"""Quantized updates for the wire (without SecAgg+): block-wise absmax codes, stochastic rounding.

A float32 tensor is cut into blocks of `block` values; each block sends its absmax `s` as one
float32 scale and every value x as a signed code q = floor(x / s x Q + u), Q = 2^(bits-1) - 1,
u ~ U[0, 1): E[q x s / Q] = x (unbiased), |error| < s / Q per value. 16 and 8 bits send
int16/int8 codes, 4 bits two codes per byte (low nibble first, stored as q + 8 in 1..15).
With blocks of 1024 values the scales add 4/1024 bytes per value: 8 bits send ~1.004 bytes per
value instead of 4. The aggregator decodes chunk by chunk into its staging buffer
(`dequantize`), refusing any chunk that is not exactly what `quantize` makes.

With SecAgg+ the masks need one code for all clients, so there this module is not used: the
SecAgg+ encoder quantizes to `bits` over the fixed range [-clipRange, clipRange] instead
(`fedfleet.secagg.quantize`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fedfleet.chunks import DEFAULT_CHUNK_BYTES, Chunk, checksum, chunk_views, to_message
from fedfleet.refusal import Refusal
from fedfleet.v1 import aggregator_pb2 as pb

Weights = dict[str, np.ndarray]
WIRE_DTYPES = {16: "q16", 8: "q8", 4: "q4"}
BITS_OF = {dtype: bits for bits, dtype in WIRE_DTYPES.items()}
DEFAULT_BLOCK = 1024
MAX_BLOCK = 1 << 16
_CODE_DTYPES: dict[int, np.dtype[np.signedinteger]] = {16: np.dtype("<i2"), 8: np.dtype(np.int8)}


def wire_dtype(bits: int) -> str | None:
    """The chunk dtype an update travels in: None for float32 (32 bits)."""
    if bits == 32:
        return None
    if bits not in WIRE_DTYPES:
        raise ValueError(f"compression bits must be 32, 16, 8 or 4, got {bits}")
    return WIRE_DTYPES[bits]


def max_code(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def data_bytes(bits: int, values: int) -> int:
    return (values * bits + 7) // 8


def quantize(values: np.ndarray, bits: int, block: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """(packed codes, float32 scales, one per block) of a 1-d float32 array."""
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("the update contains NaN or Inf; refusing to quantize it")
    n, q = len(values), max_code(bits)
    starts = np.arange(0, n, block)
    scales = np.maximum.reduceat(np.abs(values), starts).astype(np.float32)
    per_value = np.repeat(np.where(scales > 0, scales, np.float32(1)), block)[:n]
    scaled = values / per_value * np.float32(q)
    scaled += rng.random(n, dtype=np.float32)
    codes = np.clip(np.floor(scaled), -q, q)  # float32 rounding can reach q + 1 at the absmax
    if bits in _CODE_DTYPES:
        return codes.astype(_CODE_DTYPES[bits]).tobytes(), scales
    nibbles = (codes + 8).astype(np.uint8)
    if n % 2:
        nibbles = np.append(nibbles, np.uint8(0))  # the last byte's high nibble stays 0
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes(), scales


def dequantize(
    data: bytes | memoryview, scales: np.ndarray, bits: int, block: int, values: int
) -> np.ndarray:
    """float32 values of one chunk; raises ValueError naming what is malformed."""
    q = max_code(bits)
    if bits in _CODE_DTYPES:
        codes = np.frombuffer(data, dtype=_CODE_DTYPES[bits])
        if codes.size and int(codes.min()) < -q:
            raise ValueError(f"code {int(codes.min())} outside [-{q}, {q}]")
        signed = codes.astype(np.float32)
    else:
        packed = np.frombuffer(data, dtype=np.uint8)
        nibbles = np.empty(2 * len(packed), dtype=np.uint8)
        nibbles[0::2], nibbles[1::2] = packed & 0x0F, packed >> 4
        if values % 2 and nibbles[-1]:
            raise ValueError("the unused high nibble of the last byte is not 0")
        nibbles = nibbles[:values]
        if nibbles.size and int(nibbles.min()) == 0:
            raise ValueError("4-bit code -8 (nibble 0) outside [-7, 7]")
        signed = nibbles.astype(np.float32) - np.float32(8)
    per_value = np.repeat(scales / np.float32(q), block)[:values]
    out: np.ndarray = signed * per_value
    return out


def quantized_chunks(
    weights: Weights,
    bits: int,
    block: int = DEFAULT_BLOCK,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rng: np.random.Generator | None = None,
) -> Iterator[Chunk]:
    """Quantized chunks of every tensor, sorted by name; each chunk holds whole blocks."""
    dtype = wire_dtype(bits)
    assert dtype is not None
    rng = rng if rng is not None else np.random.default_rng()
    per_chunk = max(block, chunk_bytes * 8 // bits // block * block)
    for name in sorted(weights):
        array = np.asarray(weights[name])
        flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        for first in range(0, len(flat), per_chunk):
            part = flat[first : first + per_chunk]
            data, scales = quantize(part, bits, block, rng)
            raw_scales = scales.astype("<f4").tobytes()
            yield Chunk(
                name,
                dtype,
                tuple(array.shape),
                4 * first,
                data,
                checksum(data, raw_scales),
                block_values=block,
                scales=raw_scales,
                values=len(part),
            )


def iter_quantized_chunks(
    weights: Weights,
    bits: int,
    block: int = DEFAULT_BLOCK,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    rng: np.random.Generator | None = None,
) -> Iterator[pb.TensorChunk]:
    """`quantized_chunks` as protobuf messages."""
    return map(to_message, quantized_chunks(weights, bits, block, chunk_bytes, rng))


def encode_update(
    update: Weights, bits: int, block: int = DEFAULT_BLOCK, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[Chunk]:
    """The chunks a client uploads: float32 at 32 bits (views of `update`), quantized below."""
    if bits == 32:
        return chunk_views(update, chunk_bytes)
    return quantized_chunks(update, bits, block, chunk_bytes)


def decode_chunk(chunk: Chunk | pb.TensorChunk, room: int) -> np.ndarray:
    """The float32 values of a quantized chunk, `room` values at most; a Refusal names the flaw.
    Sizes are checked before anything is allocated (the data is bounded by the message size)."""
    name, bits = chunk.name, BITS_OF[chunk.dtype]
    where = f"tensor {name!r}: {chunk.dtype} chunk at byte {chunk.offset}"
    if chunk.offset % 4:
        raise Refusal("INVALID_ARGUMENT", f"{where}: offset is not on a float32 value")
    if chunk.values == 0:
        raise Refusal("INVALID_ARGUMENT", f"{where}: no values")
    if chunk.values > room:
        raise Refusal(
            "OUT_OF_RANGE",
            f"{where}: {chunk.values} values end at byte {chunk.offset + 4 * chunk.values}, "
            f"tensor has {chunk.offset + 4 * room}",
        )
    if not 1 <= chunk.block_values <= MAX_BLOCK:
        raise Refusal("INVALID_ARGUMENT", f"{where}: block_values {chunk.block_values} not in 1..{MAX_BLOCK}")
    expected = data_bytes(bits, chunk.values)
    if len(chunk.data) != expected:
        raise Refusal(
            "INVALID_ARGUMENT",
            f"{where}: {len(chunk.data)} data bytes, {chunk.values} values need {expected}",
        )
    blocks = -(-chunk.values // chunk.block_values)
    if len(chunk.scales) != 4 * blocks:
        raise Refusal(
            "INVALID_ARGUMENT",
            f"{where}: {len(chunk.scales)} scale bytes, {blocks} blocks need {4 * blocks} (float32 each)",
        )
    scales = np.frombuffer(chunk.scales, dtype="<f4")
    if not (np.isfinite(scales).all() and (scales >= 0).all()):
        raise Refusal("INVALID_ARGUMENT", f"{where}: scales must be finite and non-negative")
    try:
        return dequantize(chunk.data, scales.astype(np.float32), bits, chunk.block_values, chunk.values)
    except ValueError as err:
        raise Refusal("INVALID_ARGUMENT", f"{where}: {err}") from None
