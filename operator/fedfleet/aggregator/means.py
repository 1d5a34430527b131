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
from fedfleet.api.training import StrategySpec
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


ROBUST_BLOCK = 1 << 16  # values per step: n x block temporaries, never n x model


class RobustMean(WeightedMean):
    """Coordinate-wise trimmed mean or median of the round's plaintext updates, each client
    counting once whatever its example count: one client, however far off, moves a value by
    little. It keeps every update (n x model in memory) and needs them in the clear, so never
    with SecAgg+ (which releases only the sum) or DP (calibrated to the sum): the manifest
    refuses both."""

    def __init__(self, kind: str, trim_fraction: float) -> None:
        self.kind, self.trim_fraction = kind, trim_fraction
        self._kept: dict[int, list[np.ndarray]] = {}

    def upload_weight(self, num_examples: int) -> float:
        return 1.0  # each client counts once: the staged update is the update itself

    def check_update(self, round_: Round, update: np.ndarray) -> None:
        kept = self._kept.get(round_.number, [])  # other rounds' updates are dropped here
        self._kept = {round_.number: [*kept, update.copy()]}

    async def release(self, round_: Round, total: np.ndarray, weight: float) -> np.ndarray:
        updates = self._kept.pop(round_.number, [])
        if not updates:
            raise ValueError("no update was accepted")
        await asyncio.to_thread(robust_into, total, updates, self.kind, self.trim_fraction)
        return total


def robust_into(out: np.ndarray, updates: list[np.ndarray], kind: str, trim_fraction: float) -> None:
    """out = the coordinate-wise median (kind "median") or trimmed mean of `updates`."""
    n = len(updates)
    cut = min(int(trim_fraction * n), (n - 1) // 2)
    for begin in range(0, len(out), ROBUST_BLOCK):
        block = np.stack([u[begin : begin + ROBUST_BLOCK] for u in updates])
        if kind == "median":
            out[begin : begin + ROBUST_BLOCK] = np.median(block, axis=0)
        else:
            block.sort(axis=0)
            out[begin : begin + ROBUST_BLOCK] = block[cut : n - cut].mean(axis=0)


def mean_for(privacy: PrivacySpec, strategy: StrategySpec | None = None) -> WeightedMean:
    if strategy is not None and strategy.aggregation != "mean":
        return RobustMean(strategy.aggregation, strategy.trim_fraction)
    return PrivateMean(privacy) if privacy.enabled else WeightedMean()
