"""Pseudo-random masks: AES-128-CTR keystreams expanded straight into uint32 words.

Seekable by word offset, so any chunk of an update can be masked or unmasked on its own, and
generated with `update_into` into a reused buffer (no allocation per block: first-touch page
faults cost more than the cipher on this kind of machine).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

WORDS_PER_BLOCK = 4  # one AES block is 16 bytes
STEP_WORDS = 1 << 18  # 1 MiB of keystream per cipher call


class MaskExpander:
    """Adds or subtracts PRG(seed)[offset : offset + n] to uint32 arrays; one per thread."""

    def __init__(self) -> None:
        self._zeros = bytes(STEP_WORDS * 4 + 16)
        self._scratch = np.empty(STEP_WORDS + WORDS_PER_BLOCK, dtype=np.uint32)

    def apply(self, seed: bytes, out: np.ndarray, offset: int, subtract: bool = False) -> None:
        """out[i] += (or -=) mask word offset+i, modulo 2^32, for every i of `out`."""
        key, base = seed[:16], int.from_bytes(seed[16:32], "big")
        done = 0
        while done < len(out):
            take = min(STEP_WORDS, len(out) - done)
            start = offset + done
            skip = start % WORDS_PER_BLOCK
            blocks = -(-(skip + take) // WORDS_PER_BLOCK)
            counter = ((base + start // WORDS_PER_BLOCK) % (1 << 128)).to_bytes(16, "big")
            encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
            raw = memoryview(self._scratch).cast("B")[: blocks * 16]  # type: ignore[arg-type]
            encryptor.update_into(self._zeros[: blocks * 16], raw)
            words = self._scratch[skip : skip + take]
            target = out[done : done + take]
            if subtract:
                np.subtract(target, words, out=target)
            else:
                np.add(target, words, out=target)
            done += take

    def words(self, seed: bytes, offset: int, count: int) -> np.ndarray:
        out = np.zeros(count, dtype=np.uint32)
        self.apply(seed, out, offset)
        return out
