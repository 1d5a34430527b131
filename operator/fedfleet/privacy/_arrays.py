"""Walking a client update in fixed-size blocks, so clipping and noising never copy it whole."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

FloatArray: TypeAlias = NDArray[np.floating[Any]]
Update: TypeAlias = Mapping[str, FloatArray] | FloatArray
"""A client update: named float tensors (deltas) or one flat vector; modified in place."""

# float16/bfloat16 round too coarsely for the clipping margin; upcast such deltas first.
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_BLOCK = 1 << 16  # elements per block: 256 KiB of float32, cache-sized scratch


def tensors(update: Update, *, writable: bool) -> list[FloatArray]:
    """The update's arrays, checked up front so that a bad one fails before any is modified."""
    arrays = [update] if isinstance(update, np.ndarray) else list(update.values())
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray) or a.dtype not in _DTYPES:
            kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"update tensor #{i} must be a float32 or float64 numpy array, got {kind}")
        if writable and not a.flags.writeable:
            raise ValueError(f"update tensor #{i} is read-only; clipping and noise work in place")
    return arrays


def blocks(a: FloatArray, size: int) -> Iterator[FloatArray]:
    """Views of at most `size` elements covering `a` (any layout); writing to them writes `a`."""
    if a.ndim <= 1 or a.flags.c_contiguous or a.flags.f_contiguous:
        flat = a.reshape(-1) if a.ndim <= 1 else a.ravel(order="K")  # a view for these layouts
        for start in range(0, flat.size, size):
            yield flat[start : start + size]
    else:  # strided: recurse over the first axis until a 1-d (strided) view remains
        for sub in a:
            yield from blocks(sub, size)


def check_block(size: int) -> None:
    if size < 1:
        raise ValueError(f"block size must be positive, got {size}")
