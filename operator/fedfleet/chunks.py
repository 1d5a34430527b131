"""Tensors on the wire: named, typed, checksummed chunks that never approach gRPC's size limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from isal.isal_zlib import crc32

from fedfleet.refusal import Refusal
from fedfleet.v1 import aggregator_pb2 as pb

DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
# Generous headroom over the chunk size for the chunk's other fields.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
SUPPORTED_DTYPES = frozenset({"float16", "float32", "float64", "uint32", "uint16", "uint8"})

Weights = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A received `TensorChunk` as plain values (the data is the message's buffer, not a copy)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    data: bytes | memoryview
    crc32: int
    block_values: int = 0
    scales: bytes | memoryview = b""
    values: int = 0


def chunk_ranges(nbytes: int, itemsize: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each chunk of a tensor of `nbytes`: whole elements, at most
    `chunk_bytes` (one element at least), and one empty chunk for an empty tensor."""
    step = max(itemsize, chunk_bytes - chunk_bytes % itemsize)
    for offset in range(0, max(nbytes, 1), step):
        yield offset, min(step, nbytes - offset)


def chunk_views(weights: Weights, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[Chunk]:
    """Chunks of every tensor, sorted by name, each covering a contiguous byte range in order;
    a chunk's data is a view of the array (sent with `wire.update_message`: one copy)."""
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        raw = memoryview(array.reshape(-1)).cast("B")  # type: ignore[arg-type]
        for offset, length in chunk_ranges(len(raw), array.itemsize, chunk_bytes):
            data = raw[offset : offset + length]
            yield Chunk(name, array.dtype.name, tuple(array.shape), offset, data, checksum(data))


def to_message(chunk: Chunk) -> pb.TensorChunk:
    return pb.TensorChunk(
        name=chunk.name,
        dtype=chunk.dtype,
        shape=list(chunk.shape),
        offset=chunk.offset,
        data=bytes(chunk.data),
        crc32=chunk.crc32,
        block_values=chunk.block_values,
        scales=bytes(chunk.scales),
        values=chunk.values,
    )


def iter_chunks(weights: Weights, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[pb.TensorChunk]:
    """`chunk_views` as protobuf messages (their data copied)."""
    return map(to_message, chunk_views(weights, chunk_bytes))


def checksum(data: bytes | memoryview, scales: bytes | memoryview = b"") -> int:
    """A chunk's CRC32 (zlib's polynomial): over data, then scales (empty unless quantized).
    ISA-L's carry-less-multiply CRC: the same value as `zlib.crc32`, 3-4x faster."""
    return crc32(scales, crc32(data))


def verify_crc(chunk: Chunk | pb.TensorChunk) -> None:
    if checksum(chunk.data, chunk.scales) != chunk.crc32:
        raise Refusal(
            "DATA_LOSS", f"tensor {chunk.name!r}: checksum mismatch in chunk at byte {chunk.offset}"
        )


def reuse_arrays(kept: Weights, like: Weights) -> Weights:
    """Arrays shaped and typed like `like`'s: `kept`'s where they fit, else new ones. Reusing a
    model-sized array every round spares its fresh pages (~1 GB/s to fault in, more than the copy)."""
    return {name: _fitting(kept.get(name), a.shape, a.dtype) for name, a in like.items()}


def _fitting(array: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    if array is not None and array.shape == shape and array.dtype == dtype:
        return array
    return np.empty(shape, dtype=dtype)


class ChunkAssembler:
    """Rebuilds a weight dict from a chunk stream, checking order, checksums and completeness;
    into `reuse`'s arrays where they fit (the previous round's, which the caller gives up)."""

    def __init__(self, reuse: Weights | None = None) -> None:
        self._reuse = reuse or {}
        self._arrays: Weights = {}
        self._filled: dict[str, int] = {}

    def add(self, chunk: Chunk | pb.TensorChunk) -> None:
        verify_crc(chunk)
        if chunk.dtype not in SUPPORTED_DTYPES:
            raise Refusal("INVALID_ARGUMENT", f"tensor {chunk.name!r}: unsupported dtype {chunk.dtype!r}")
        array = self._arrays.get(chunk.name)
        if array is None:
            array = _fitting(self._reuse.get(chunk.name), tuple(chunk.shape), np.dtype(chunk.dtype))
            self._arrays[chunk.name], self._filled[chunk.name] = array, 0
        if chunk.offset != self._filled[chunk.name]:
            raise Refusal(
                "INVALID_ARGUMENT", f"tensor {chunk.name!r}: chunk at byte {chunk.offset} out of order"
            )
        raw = memoryview(array.reshape(-1)).cast("B")  # type: ignore[arg-type]
        end = chunk.offset + len(chunk.data)
        if end > len(raw):
            raise Refusal(
                "OUT_OF_RANGE", f"tensor {chunk.name!r}: chunk ends at byte {end}, tensor has {len(raw)}"
            )
        raw[chunk.offset : end] = chunk.data
        self._filled[chunk.name] = end

    def result(self) -> Weights:
        for name, array in self._arrays.items():
            if self._filled[name] != array.nbytes:
                raise Refusal(
                    "DATA_LOSS", f"tensor {name!r}: got {self._filled[name]} of {array.nbytes} bytes"
                )
        return self._arrays
