"""Fixed-point encoding of clipped, weighted updates into uint32, sized so a sum cannot wrap.

Each value x in [-c, c] becomes floor((x + c) * scale + u), u ~ U[0, 1) (stochastic rounding:
unbiased), with scale = (2^32 - 1) / (n * 2c) for at most n summands.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 18
FIELD = 2**32


def scale_for(clip: float, max_summands: int) -> float:
    return (FIELD - 1) / (max_summands * 2 * clip)


def quantize_into(
    values: np.ndarray, out: np.ndarray, clip: float, scale: float, rng: np.random.Generator
) -> None:
    """float32 `values` -> uint32 `out` (same length), in blocks, with stochastic rounding."""
    work = np.empty(min(BLOCK, len(values)), dtype=np.float64)
    noise = np.empty(len(work), dtype=np.float32)
    low, high = -clip * scale, clip * scale
    for begin in range(0, len(values), BLOCK):
        n = min(BLOCK, len(values) - begin)
        w, u = work[:n], noise[:n]
        np.multiply(values[begin : begin + n], scale, out=w)
        np.clip(w, low, high, out=w)
        w += high  # float64: the offset is up to 2^32 / n, far beyond float32's precision
        rng.random(out=u, dtype=np.float32)  # the rounding noise itself needs no more than float32
        w += u
        out[begin : begin + n] = w  # truncation of a non-negative value is floor


def dequantize(summed: np.ndarray, summands: int, clip: float, scale: float) -> np.ndarray:
    """The float sum of `summands` encoded values (float64 for exactness, then float32)."""
    return (summed.astype(np.float64) / scale - summands * clip).astype(np.float32)
