"""SecAgg+ parameters of one round, derived from the manifest and the participant count."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SecAggParams:
    participants: int
    neighbours: int  # k: each client masks with and shares its secrets among k others
    threshold: int  # t: shares needed to recover a secret; also the fewest survivors
    clip: float  # update values are clipped to [-clip, clip] before encoding
    max_weight: float  # weights (example counts) above it are capped

    @classmethod
    def build(
        cls,
        participants: int,
        neighbours: int = 0,
        threshold_ratio: float = 0.5,
        clip: float = 8.0,
        max_weight: float = 100_000.0,
    ) -> SecAggParams:
        """k = 0 picks ~2 log2(n) (SecAgg+); k = n - 1 is classic SecAgg. t = ceil(ratio * k), at least 2."""
        if participants < 2:
            raise ValueError("secure aggregation needs at least 2 participants")
        k = neighbours or max(2, math.ceil(2 * math.log2(participants)))
        k = min(k, participants - 1)
        if k * participants % 2:  # a k-regular graph on n nodes needs k*n even
            k = k + 1 if k + 1 <= participants - 1 else k - 1
        threshold = min(k, max(2, math.ceil(threshold_ratio * k)))
        return cls(participants, k, threshold, clip, max_weight)
