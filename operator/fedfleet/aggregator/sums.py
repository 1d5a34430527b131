"""The round's running sum of client updates: one interface, a plain and a masked implementation.

An upload is all-or-nothing: a refused or broken upload never changes the sum. How that is kept
differs with the arithmetic:

* `PlainSum` (float32, weight x update): float addition cannot be undone exactly, so an upload
  is received into a staging buffer (scaled by its weight as it is copied there from the
  chunk's bytes), checked chunk by chunk, and added to the sum only once complete (the
  round's first one, while the sum is zeros, becomes the sum by a swap of buffers).
  Memory is (1 + staging slots) x model; uploads beyond the free slots wait, held back by gRPC
  flow control.
* `MaskedSum` (SecAgg+ lanes, sums mod 2^lane): integer addition is exactly reversible, so each
  checked chunk is added into the sum as it arrives and also appended to an undo journal, an
  unnamed file in the state directory written past the page cache (`direct_io`: on disk, not
  in memory, and without the kernel's throttling of dirty pages); a refused upload is undone
  by subtracting those words again. Memory is one model of lanes plus a journal block (1 MiB)
  per upload in flight, whatever the number of uploads. Journals are kept and rewritten in
  place, upload after upload and round after round (one per upload in flight at once).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.aggregator.admission import ChunkCheck
from fedfleet.aggregator.direct_io import BlockWriter
from fedfleet.aggregator.layout import ModelLayout
from fedfleet.chunks import Chunk
from fedfleet.secagg import MASKED_TENSOR

FOLD_BLOCK = 1 << 20  # elements per in-place fold step: keeps temporaries cache-sized


class Upload(ABC):
    """One client's upload into a running sum: chunks as they arrive, then commit or abort."""

    def __init__(self, check: ChunkCheck) -> None:
        self.check = check

    @property
    def bytes_received(self) -> int:
        return self.check.bytes_received

    @abstractmethod
    def add(self, chunk: Chunk) -> None:
        """Check one chunk (a `Refusal` leaves everything as it was) and take its values."""

    def plaintext(self) -> np.ndarray | None:
        """The complete weight x update in the clear (float32, flat), where the sum sees it."""
        return None

    @abstractmethod
    def commit(self) -> None:
        """The upload is complete and admitted: it is in the sum."""

    @abstractmethod
    def abort(self) -> None:
        """The upload is refused: the sum is as if it never began. Idempotent."""


class RunningSum(ABC):
    """Sum over admitted uploads; `total` is flat, in the layout of `layout`."""

    def __init__(self, layout: ModelLayout, dtype: np.dtype[Any]) -> None:
        self.layout = layout
        self.dtype = dtype
        self.total = np.empty(layout.size, dtype=dtype)
        self.total_weight = 0.0
        self.count = 0

    def reset(self) -> None:
        """Zero the sum for a new round (touches every page of a model-sized buffer)."""
        self.total.fill(0)
        self.total_weight = 0.0
        self.count = 0

    @abstractmethod
    async def open_upload(self, weight: float) -> Upload:
        """A new upload that counts with `weight` (masked uploads carry theirs inside); may
        wait for room."""

    @abstractmethod
    def close_uploads(self) -> None:
        """The round stopped taking uploads: any still in flight is taken out of the sum now."""


class _StagedUpload(Upload):
    def __init__(self, owner: PlainSum, buffer: np.ndarray, weight: float) -> None:
        super().__init__(ChunkCheck(owner.layout, owner.wire))
        self.owner, self.buffer, self.weight = owner, buffer, weight
        self.done = False

    def add(self, chunk: Chunk) -> None:
        _, first, values = self.check.values(chunk)
        # the one copy of the update: from the chunk's bytes into the staging slot, scaled
        np.multiply(values, np.float32(self.weight), out=self.buffer[first : first + len(values)])
        self.check.accept(chunk, values)

    def plaintext(self) -> np.ndarray:
        self.check.check_complete()
        return self.buffer

    def commit(self) -> None:
        """Add the staged weight x update into the sum, in place and in blocks. The round's
        first one takes the sum's place instead (the sum is zeros then: 0 + x is x), and the
        zeroed sum becomes the free staging buffer: no pass over the model at all."""
        self.check.check_complete()
        total = self.owner.total
        if self.owner.count == 0:
            self.owner.total, self.buffer = self.buffer, total
        else:
            for begin in range(0, len(total), FOLD_BLOCK):
                block = total[begin : begin + FOLD_BLOCK]
                np.add(block, self.buffer[begin : begin + FOLD_BLOCK], out=block)
        self.owner.total_weight += self.weight
        self.owner.count += 1
        self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self.done:
            self.done = True
            self.owner.release(self.buffer)


class PlainSum(RunningSum):
    """float32 sum of weight x update; uploads staged in `staging_slots` reusable buffers."""

    def __init__(self, layout: ModelLayout, staging_slots: int = 1, wire: str | None = None) -> None:
        """`wire`: the quantized dtype float32 tensors arrive in (spec.compression.bits < 32)."""
        if staging_slots < 1:
            raise ValueError("staging_slots must be at least 1")
        super().__init__(layout, np.dtype(np.float32))
        self.wire = wire
        self._free: list[np.ndarray] = []
        self._allocated = 0
        self._slots = asyncio.Semaphore(staging_slots)

    def reset(self) -> None:
        """Zero the sum, and have one staging buffer ready: buffers are allocated once and
        reused, and their first touch (page faults, ~1 GB/s) is paid here, not mid-upload."""
        super().reset()
        if self._allocated == 0:
            self._free.append(self._new_buffer())

    def _new_buffer(self) -> np.ndarray:
        buffer = np.empty(self.layout.size, dtype=self.dtype)
        buffer.fill(0)
        self._allocated += 1
        return buffer

    async def open_upload(self, weight: float) -> Upload:
        """Wait for a free staging buffer."""
        await self._slots.acquire()
        return _StagedUpload(self, self._free.pop() if self._free else self._new_buffer(), weight)

    def close_uploads(self) -> None:
        """Staged uploads never touched the sum: the engine refuses their commit once closed."""

    def release(self, buffer: np.ndarray) -> None:
        self._free.append(buffer)
        self._slots.release()


class _FoldedUpload(Upload):
    """Words go straight into the sum; the journal holds them at their own position (the
    upload's words [0, added) are in the sum) for the undo."""

    def __init__(self, owner: MaskedSum, journal: BlockWriter) -> None:
        super().__init__(ChunkCheck(owner.layout))
        self.owner, self.journal = owner, journal
        self.journal.rewind()
        self.added = 0  # words of this upload in the sum: chunks arrive in order, from word 0
        self.done = False

    def add(self, chunk: Chunk) -> None:
        if self.done:
            raise RuntimeError("the upload is closed")
        _, first, words = self.check.values(chunk)  # in order, from word 0: the journal appends
        self.journal.append(words.data)  # before the sum: an error leaves it as it was
        target = self.owner.total[first : first + len(words)]
        np.add(target, words, out=target)  # wraps: mod 2^lane
        self.added = first + len(words)
        self.check.accept(chunk, words)

    def commit(self) -> None:
        """The weight travels masked inside the words; nothing to add."""
        self.check.check_complete()
        self.owner.count += 1
        self._close()

    def abort(self) -> None:
        if self.done:
            return
        total = self.owner.total
        scratch = np.empty(min(self.added, FOLD_BLOCK), dtype=total.dtype)
        for first in range(0, self.added, FOLD_BLOCK):
            words = scratch[: min(FOLD_BLOCK, self.added - first)]
            self.journal.read(first * words.itemsize, words.data)
            target = total[first : first + len(words)]
            np.subtract(target, words, out=target)
        self._close()

    def _close(self) -> None:
        self.done = True
        self.owner.open.discard(self)
        self.owner.journals.append(self.journal)


class MaskedSum(RunningSum):
    """Sum mod 2^lane of SecAgg+ masked uploads (M words and the masked weight word(s))."""

    def __init__(self, size: int, lane: np.dtype[Any], spool_dir: Path) -> None:
        super().__init__(ModelLayout({MASKED_TENSOR: (lane, (size,))}), lane)
        self.spool_dir = spool_dir
        self.open: set[_FoldedUpload] = set()
        self.journals: list[BlockWriter] = []  # free ones; closed when this sum is dropped

    def fits(self, size: int, lane: np.dtype[Any]) -> bool:
        return self.dtype == lane and self.layout.size == size

    async def open_upload(self, weight: float) -> Upload:
        journal = self.journals.pop() if self.journals else BlockWriter.unnamed(self.spool_dir)
        upload = _FoldedUpload(self, journal)
        self.open.add(upload)
        return upload

    def close_uploads(self) -> None:
        for upload in list(self.open):
            upload.abort()
