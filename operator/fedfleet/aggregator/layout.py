"""Where each tensor of the model lives in one flat vector (tensors sorted by name)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSlot:
    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    start: int  # element offset in the flat vector
    size: int

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class ModelLayout:
    def __init__(self, tensors: dict[str, tuple[np.dtype[np.generic], tuple[int, ...]]]) -> None:
        """`tensors`: name -> (dtype, shape)."""
        self.slots: dict[str, TensorSlot] = {}
        start = 0
        for name in sorted(tensors):
            dtype, shape = tensors[name]
            size = int(np.prod(shape, dtype=np.int64))
            self.slots[name] = TensorSlot(name, np.dtype(dtype), tuple(int(d) for d in shape), start, size)
            start += size
        self.size = start

    @classmethod
    def of(cls, weights: Weights) -> ModelLayout:
        return cls({name: (array.dtype, tuple(array.shape)) for name, array in weights.items()})

    def views(self, flat: np.ndarray) -> Iterator[tuple[TensorSlot, np.ndarray]]:
        for slot in self.slots.values():
            yield slot, flat[slot.start : slot.start + slot.size].reshape(slot.shape)
