"""Per-client L2 clipping: bounds what one client can change in the sum (the DP sensitivity).

The norm is taken over all tensors of the update jointly, as client-level DP needs: the bound
is on the whole contribution of one client, not per layer. Everything runs in blocks over one
small float64 scratch, so a multi-GiB update is clipped in place with O(block) extra memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedfleet.privacy._arrays import DEFAULT_BLOCK, Update, blocks, check_block, tensors

# Shrink the scale by 2^-22 (and round it down to float32): each scaled element may round up
# by 2^-24 relative, so the clipped update's exact norm stays <= clip_norm, not just about it.
_MARGIN = 1.0 - 2.0**-22


@dataclass(frozen=True, slots=True)
class ClipResult:
    """What clipping did: the norm before, and the factor every value was multiplied by."""

    norm: float
    scale: float

    @property
    def clipped(self) -> bool:
        return self.scale < 1.0


def l2_norm(update: Update, *, block: int = DEFAULT_BLOCK) -> float:
    """L2 norm over all tensors jointly, squares summed in float64 (float32 sums drift)."""
    check_block(block)
    arrays = tensors(update, writable=False)
    largest = max((a.size for a in arrays), default=0)
    scratch = np.empty(min(block, largest), dtype=np.float64)
    total = 0.0
    for a in arrays:
        for b in blocks(a, block):
            sq = scratch[: b.size]
            np.multiply(b, b, out=sq, dtype=np.float64)
            total += float(sq.sum())
    return math.sqrt(total)


def clip_update(update: Update, clip_norm: float, *, block: int = DEFAULT_BLOCK) -> ClipResult:
    """Scale `update` in place so its joint L2 norm is at most `clip_norm`.

    An update already within the bound is left bit-for-bit untouched (scale 1.0). A non-finite
    update is refused before anything is modified: it has no norm to bound.
    """
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be positive and finite, got {clip_norm}")
    arrays = tensors(update, writable=True)
    norm = l2_norm(update, block=block)
    if not math.isfinite(norm):
        raise ValueError("update has non-finite values (NaN or inf); cannot clip it")
    if norm <= clip_norm:
        return ClipResult(norm=norm, scale=1.0)
    exact = clip_norm / norm * _MARGIN
    scale = np.float32(exact)
    if float(scale) > exact:
        scale = np.nextafter(scale, np.float32(0))
    for a in arrays:
        np.multiply(a, scale.astype(a.dtype), out=a)  # elementwise, any layout: no copy
    return ClipResult(norm=norm, scale=float(scale))
