"""Pseudo-random masks: AES-128-CTR keystreams written straight into uint32, uint16 or uint8 lanes.

A mask is PRG(seed)[i] = lane i of the AES-128-CTR keystream under key seed[:16] with the
counter starting at 0, the keystream read as little-endian lanes of the round's width (4, 2 or
1 bytes), so lane i sits in counter block i x width // 16: any chunk [offset, offset + n) can
be produced on its own (seekable). `update_into` writes into a scratch buffer allocated
once (the allocating `update()` is ~6x slower, and fresh pages cost more than the cipher).
A stream remembers where it stopped, so consecutive chunks reuse one cipher context.
"""

from __future__ import annotations

import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

WORDS_PER_AES_BLOCK = 4
AES_BLOCK_BYTES = 16
DEFAULT_BLOCK_WORDS = 1 << 16  # 256 KiB of keystream per call: cache-sized, few Python calls


class Scratch:
    """Reusable block buffers: keystream words (plus one AES block of slack for `update_into`)
    and the float work arrays of (de)quantization. Get them with `thread_scratch()`."""

    def __init__(self, block_words: int = DEFAULT_BLOCK_WORDS) -> None:
        if block_words < 16 or block_words % WORDS_PER_AES_BLOCK:
            raise ValueError("block_words must be a multiple of 4, at least 16")
        self.block_words = block_words
        self.words = np.empty(block_words + 2 * WORDS_PER_AES_BLOCK, dtype=np.uint32)
        self.bytes = memoryview(self.words).cast("B")  # type: ignore[arg-type]
        self.u8 = self.words.view(np.uint8)
        self.zeros = _zeros(4 * (block_words + WORDS_PER_AES_BLOCK))
        self.f32 = np.empty(block_words, dtype=np.float32)
        self.f64 = np.empty(block_words, dtype=np.float64)
        self.f64b = np.empty(block_words, dtype=np.float64)
        for array in (self.words, self.f32, self.f64, self.f64b):
            array.fill(0)  # touch the pages once, here, not inside the first block


_U32: np.dtype[np.unsignedinteger] = np.dtype(np.uint32)
_zero_buffers: dict[int, bytes] = {}
_local = threading.local()


def _zeros(size: int) -> bytes:
    """The cipher's input: zeros, shared read-only by every scratch of that size."""
    if size not in _zero_buffers:
        _zero_buffers[size] = bytes(size)
    return _zero_buffers[size]


def thread_scratch(block_words: int = DEFAULT_BLOCK_WORDS) -> Scratch:
    """This thread's scratch for `block_words`, made once and reused by every client, server
    and round in the thread (a call uses it from start to end, so one per thread is safe)."""
    spaces: dict[int, Scratch] = _local.__dict__.setdefault("spaces", {})
    if block_words not in spaces:
        spaces[block_words] = Scratch(block_words)
    return spaces[block_words]


class Keystream:
    """PRG(seed) as a seekable stream of lanes (uint32 words unless told otherwise)."""

    __slots__ = ("_context", "_key", "_position")

    def __init__(self, seed: bytes) -> None:
        if len(seed) < 16:
            raise ValueError("a mask seed has at least 16 bytes")
        self._key = bytes(seed[:16])
        self._context: CipherContext | None = None
        self._position = -1

    def fill(
        self, scratch: Scratch, offset: int, count: int, dtype: np.dtype[np.unsignedinteger] = _U32
    ) -> np.ndarray:
        """Lanes [offset, offset + count) of `dtype` (count <= scratch.block_words), as a view of
        scratch. A stream is read with one lane width throughout."""
        width = dtype.itemsize
        start, skip = offset * width, 0
        if self._context is None or start != self._position:
            counter = (start // AES_BLOCK_BYTES).to_bytes(16, "big")
            self._context = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
            skip = start % AES_BLOCK_BYTES
        nbytes = skip + width * count
        self._context.update_into(scratch.zeros[:nbytes], scratch.bytes)
        self._position = start + width * count
        if width == 4:
            return scratch.words[skip // 4 : skip // 4 + count]
        return scratch.u8[skip:nbytes].view(dtype)


def apply_streams(
    out: np.ndarray, offset: int, streams: list[tuple[Keystream, bool]], scratch: Scratch
) -> None:
    """out[i] +=/-= PRG_j[offset + i] (mod 2^lane) for every (stream j, subtract) pair, block by
    block, in out's lane width."""
    step = scratch.block_words
    for begin in range(0, len(out), step):
        target = out[begin : begin + step]
        for stream, subtract in streams:
            words = stream.fill(scratch, offset + begin, len(target), out.dtype)
            if subtract:
                np.subtract(target, words, out=target)
            else:
                np.add(target, words, out=target)


class MaskExpander:
    """Convenience: one seed at a time (tests and tools); the protocol uses `apply_streams`."""

    def __init__(self, block_words: int = DEFAULT_BLOCK_WORDS) -> None:
        self.block_words = block_words

    def apply(self, seed: bytes, out: np.ndarray, offset: int, subtract: bool = False) -> None:
        apply_streams(out, offset, [(Keystream(seed), subtract)], thread_scratch(self.block_words))

    def words(self, seed: bytes, offset: int, count: int, dtype: type = np.uint32) -> np.ndarray:
        out: np.ndarray = np.zeros(count, dtype=dtype)
        self.apply(seed, out, offset)
        return out
