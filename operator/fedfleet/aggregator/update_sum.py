"""The running sum of client updates, folded update by update in O(model) memory.

An upload is written into one of a few reusable staging buffers while its chunks are checked
(name, dtype, shape, order, checksum, finiteness), and folded into the sum only once complete:
a refused or broken upload never touches the sum. Quantized chunks (`compression.bits` below
32) are decoded chunk by chunk into the float32 staging buffer, after the same checks. Memory
is (1 + staging slots) x model, whatever the number of clients; uploads beyond the free slots
wait, held back by gRPC flow control.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedfleet.chunks import verify_crc
from fedfleet.compression import BITS_OF, decode_chunk
from fedfleet.refusal import Refusal
from fedfleet.v1 import aggregator_pb2 as pb

Weights = dict[str, np.ndarray]
FOLD_BLOCK = 1 << 20  # elements per in-place fold step: keeps temporaries cache-sized


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    start: int  # element offset in the flat float32 vector
    size: int

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class ModelLayout:
    """Where each tensor lives in one flat float32 vector (tensors sorted by name)."""

    def __init__(self, weights: Weights) -> None:
        self.slots: dict[str, TensorSlot] = {}
        start = 0
        for name in sorted(weights):
            array = weights[name]
            self.slots[name] = TensorSlot(name, array.dtype, tuple(array.shape), start, array.size)
            start += array.size
        self.size = start

    def views(self, flat: np.ndarray) -> Iterator[tuple[TensorSlot, np.ndarray]]:
        for slot in self.slots.values():
            yield slot, flat[slot.start : slot.start + slot.size].reshape(slot.shape)


class StagedUpdate:
    """One client's upload being received into a staging buffer; checked chunk by chunk."""

    def __init__(self, layout: ModelLayout, buffer: np.ndarray, wire: str | None = None) -> None:
        """`wire`: the quantized dtype (q16, q8, q4) float32 tensors must arrive in, if any."""
        self.layout = layout
        self.buffer = buffer
        self.wire = wire
        self._filled = dict.fromkeys(layout.slots, 0)
        self.bytes_received = 0

    def add_chunk(self, chunk: pb.TensorChunk) -> None:
        slot = self.layout.slots.get(chunk.name)
        if slot is None:
            raise Refusal("INVALID_ARGUMENT", f"unknown tensor {chunk.name!r}")
        wanted = self.wire if self.wire is not None and slot.dtype == np.float32 else slot.dtype.name
        if chunk.dtype != wanted:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"tensor {chunk.name!r}: dtype {chunk.dtype}, expected {wanted}"
                + (f" (spec.compression.bits is {BITS_OF[wanted]})" if wanted in BITS_OF else ""),
            )
        if tuple(chunk.shape) != slot.shape:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"tensor {chunk.name!r}: shape {list(chunk.shape)}, expected {list(slot.shape)}",
            )
        verify_crc(chunk)
        expected = self._filled[chunk.name]
        if chunk.offset != expected:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"tensor {chunk.name!r}: chunk at byte {chunk.offset}, expected byte {expected} "
                "(chunks of a tensor arrive once, in order)",
            )
        itemsize = slot.dtype.itemsize
        if wanted in BITS_OF:
            self._add_values(slot, chunk, decode_chunk(chunk, (slot.nbytes - chunk.offset) // itemsize))
            return
        if len(chunk.data) % itemsize:
            raise Refusal(
                "INVALID_ARGUMENT", f"tensor {chunk.name!r}: chunk of {len(chunk.data)} bytes splits a value"
            )
        end = chunk.offset + len(chunk.data)
        if end > slot.nbytes:
            raise Refusal(
                "OUT_OF_RANGE", f"tensor {chunk.name!r}: chunk ends at byte {end}, tensor has {slot.nbytes}"
            )
        self._add_values(slot, chunk, np.frombuffer(chunk.data, dtype=slot.dtype))

    def _add_values(self, slot: TensorSlot, chunk: pb.TensorChunk, values: np.ndarray) -> None:
        if not np.isfinite(values).all():
            raise Refusal(
                "INVALID_ARGUMENT", f"tensor {chunk.name!r}: NaN or Inf in chunk at byte {chunk.offset}"
            )
        first = slot.start + chunk.offset // slot.dtype.itemsize
        self.buffer[first : first + len(values)] = values
        self._filled[chunk.name] = chunk.offset + len(values) * slot.dtype.itemsize
        self.bytes_received += len(chunk.data) + len(chunk.scales)

    def check_complete(self) -> None:
        for name, filled in self._filled.items():
            total = self.layout.slots[name].nbytes
            if filled != total:
                raise Refusal(
                    "INVALID_ARGUMENT", f"incomplete update: tensor {name!r} has {filled} of {total} bytes"
                )


class UpdateSum:
    """Sum of weight x delta over accepted updates, plus the sum of weights."""

    def __init__(
        self,
        layout: ModelLayout,
        staging_slots: int = 2,
        dtype: type | np.dtype[np.generic] = np.float32,
        wire: str | None = None,
    ) -> None:
        """float32: sum of weight x update (uploads in float32, or quantized as `wire`).
        uint32/16/8: sum mod 2^lane of masked uploads (weights travel inside)."""
        if staging_slots < 1:
            raise ValueError("staging_slots must be at least 1")
        self.layout = layout
        self.dtype = np.dtype(dtype)
        self.wire = wire
        self.total = np.zeros(layout.size, dtype=self.dtype)
        self.total_weight = 0.0
        self.count = 0
        self._free: list[np.ndarray] = []
        self._allocated = 0
        self._slots = asyncio.Semaphore(staging_slots)
        self._max_slots = staging_slots

    def reset(self) -> None:
        self.total.fill(0)
        self.total_weight = 0.0
        self.count = 0

    async def acquire(self) -> StagedUpdate:
        """Wait for a free staging buffer; buffers are allocated once and reused (first touch is slow)."""
        await self._slots.acquire()
        if self._free:
            buffer = self._free.pop()
        else:
            buffer = np.empty(self.layout.size, dtype=self.dtype)
            self._allocated += 1
        return StagedUpdate(self.layout, buffer, self.wire)

    def release(self, staged: StagedUpdate) -> None:
        self._free.append(staged.buffer)
        self._slots.release()

    def fold(self, staged: StagedUpdate, weight: float) -> None:
        """Add weight x update into the sum, in place and in blocks; the staging buffer is consumed."""
        staged.check_complete()
        source, weight32 = staged.buffer, np.float32(weight)
        masked = self.dtype.kind == "u"
        for begin in range(0, self.layout.size, FOLD_BLOCK):
            block = source[begin : begin + FOLD_BLOCK]
            if not masked:
                block *= weight32
            self.total[begin : begin + FOLD_BLOCK] += block  # unsigned lanes wrap: mod 2^lane
        self.total_weight += weight
        self.count += 1

    def mean(self) -> Weights:
        """The weighted mean update per tensor: the sum is scaled in place (no model-sized copy),
        so it is spent afterwards until `reset()`."""
        if self.total_weight <= 0:
            raise ValueError("no update was accepted")
        self.total /= np.float32(self.total_weight)
        self.total_weight = 0.0
        return {slot.name: view for slot, view in self.layout.views(self.total)}
