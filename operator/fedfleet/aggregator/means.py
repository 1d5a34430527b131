"""From the round's sum to the mean update the strategy applies; DP wraps the plain mean.

`WeightedMean` is FedAvg's example-weighted mean. `PrivateMean` (DP-FedAvg) wraps it: every
update counts with weight 1, a plaintext update beyond clipNorm is refused, and the release
adds the central noise (if the mode says so) and divides by the round's fixed cohort size.
Both work in place on the sum's float32 buffer: no model-sized copy.
"""

from __future__ import annotations

import asyncio

import numpy as np

from fedfleet.aggregator.admission import check_clipped
from fedfleet.aggregator.rounds import Round
from fedfleet.privacy import PrivacySpec, l2_norm, release_mean


class WeightedMean:
    def upload_weight(self, num_examples: int) -> float:
        return float(num_examples)

    def check_update(self, round_: Round, update: np.ndarray) -> None:
        """Refuse a plaintext update the mean cannot take (nothing to check here)."""

    async def release(self, round_: Round, total: np.ndarray, weight: float) -> np.ndarray:
        if weight <= 0:
            raise ValueError("no update was accepted")
        np.divide(total, np.float32(weight), out=total)
        return total


class PrivateMean(WeightedMean):
    def __init__(self, privacy: PrivacySpec) -> None:
        self.privacy = privacy

    def upload_weight(self, num_examples: int) -> float:
        return 1.0  # one client moves the sum by at most clipNorm

    def check_update(self, round_: Round, update: np.ndarray) -> None:
        """`update` is weight x update with weight 1: the update itself."""
        norm = l2_norm(update)
        check_clipped(norm, self.privacy.clip_norm or 0.0)
        round_.max_update_norm = max(round_.max_update_norm, norm)

    async def release(self, round_: Round, total: np.ndarray, weight: float) -> np.ndarray:
        released = await asyncio.to_thread(
            release_mean,
            total,
            self.privacy,
            len(round_.participants),
            len(round_.reported),
            round_.max_update_norm,
        )
        round_.privacy = released.to_record()
        return total


def mean_for(privacy: PrivacySpec) -> WeightedMean:
    return PrivateMean(privacy) if privacy.enabled else WeightedMean()
