"""SecAgg+ parameters of one round: neighbours k, threshold t, clipping and the fixed-point code.

k and t come from n, a target dropout rate d and a failure probability f (`derive`): t is the
least threshold strictly above k/2 (2t > k + c keeps c colluding neighbours from recovering
both secrets of one client: `threshold_for`), and k the least degree for which the union bound
n * P[Binomial(k, 1 - d) < t] (some client keeps fewer than t surviving neighbours, so its
masks cannot be removed, or it is cut off from the other survivors) is at most f; n - 1
(classic SecAgg) when no smaller k reaches it. `failure_bound` gives the figure for any k, t.

Both sides must build identical parameters (the client sends a fingerprint with its keys and
the aggregator refuses a mismatch): they fix how a float becomes a code and back, and the lane
the masked sum runs in: the narrowest of uint8, uint16, uint32 in which n codes of `bits` bits
cannot wrap (`bits` plus ceil(log2 n) bits of headroom), so narrow codes shrink masked uploads.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from math import comb
from typing import Literal

import numpy as np

DEFAULT_DROPOUT = 0.05  # clients expected to drop between advertising keys and revealing
DEFAULT_FAILURE_PROBABILITY = 1e-4  # a round aborted for dropouts within the target rate
CLIP_RANGE = (1e-6, 1e6)  # a sane clip range: its code step stays finite and above float rounding
MAX_WEIGHT_RANGE = (1.0, 1e9)  # example counts; beyond it the weight code would round to 0
WEIGHT_WORDS = 1  # W with 32-bit lanes: words after the M update words that carry the masked weight
LANE_BITS = (8, 16, 32)
Rounding = Literal["stochastic", "nearest"]


@dataclass(frozen=True)
class SecAggParams:
    participants: int  # n: clients selected for the round; the sum of n codes must not wrap
    neighbours: int  # k: each client masks with, and shares its secrets among, k others
    threshold: int  # t: shares that recover a secret, and colluders needed to break one
    clip: float  # c: update values are clipped to [-c, c] before encoding
    max_weight: float  # weights (example counts) are capped here; the unit of the pre-scaling
    bits: int = 0  # per-client code width; 0 = the finest that n summands allow
    rounding: Rounding = "stochastic"  # stochastic is unbiased; nearest is cheaper, biased
    max_chunk_words: int = 1 << 22  # largest masked chunk the aggregator accepts (16 MiB)
    lane: int = 0  # masked word width (8, 16, 32); 0 = the narrowest that n codes of `bits` fit

    def __post_init__(self) -> None:
        n, k, t = self.participants, self.neighbours, self.threshold
        if n < 3:
            raise ValueError(f"secure aggregation needs at least 3 participants, got {n}")
        if not 1 <= k <= n - 1:
            raise ValueError(f"neighbours k={k} must be within 1..{n - 1} for {n} participants")
        if not 2 <= t <= k or 2 * t <= k:
            raise ValueError(
                f"threshold t={t} must be within 2..k={k} and above k/2: otherwise an aggregator that "
                "lies about dropouts collects both secrets of a client"
            )
        if not CLIP_RANGE[0] <= self.clip <= CLIP_RANGE[1]:
            raise ValueError(f"clip must be within {CLIP_RANGE[0]:g}..{CLIP_RANGE[1]:g}, got {self.clip}")
        if not MAX_WEIGHT_RANGE[0] <= self.max_weight <= MAX_WEIGHT_RANGE[1]:
            low, high = MAX_WEIGHT_RANGE
            raise ValueError(f"max_weight must be within {low:g}..{high:g}, got {self.max_weight}")
        if self.bits and (self.bits < 2 or (1 << self.bits) - 1 > _max_levels(32, n)):
            raise ValueError(
                f"bits={self.bits}: {n} summands of 2^bits levels must fit in 32 bits "
                f"(at most {int(math.log2(_max_levels(32, n) + 1))})"
            )
        if self.rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {self.rounding!r}")
        if self.max_chunk_words < 1:
            raise ValueError("max_chunk_words must be positive")
        if self.lane and (self.lane not in LANE_BITS or _max_levels(self.lane, n) < 1):
            raise ValueError(f"lane={self.lane} must be 8, 16 or 32 with room for {n} summands")
        if self.lane and self.bits and (1 << self.bits) - 1 > _max_levels(self.lane, n):
            raise ValueError(f"bits={self.bits}: {n} summands do not fit in {self.lane}-bit lanes")

    @classmethod
    def build(
        cls,
        participants: int,
        neighbours: int = 0,
        threshold_ratio: float = 0.0,
        clip: float = 8.0,
        max_weight: float = 100_000.0,
        bits: int = 0,
        rounding: Rounding = "stochastic",
        lane: int = 0,
        dropout: float = DEFAULT_DROPOUT,
        failure_probability: float = DEFAULT_FAILURE_PROBABILITY,
    ) -> SecAggParams:
        """k = 0 derives k from n, `dropout` and `failure_probability` (`derive_neighbours`);
        k = n - 1 is classic SecAgg. t = the least above k/2, or ceil(ratio k) if that is more."""
        if participants < 3:
            raise ValueError(f"secure aggregation needs at least 3 participants, got {participants}")
        if not 0 <= threshold_ratio <= 1:
            raise ValueError(f"threshold_ratio must be within [0, 1], got {threshold_ratio}")
        k = neighbours or derive_neighbours(participants, dropout, failure_probability)
        k = max(2, min(k, participants - 1))
        if k * participants % 2:  # a k-regular graph on n nodes needs k*n even
            k = k + 1 if k + 1 <= participants - 1 else k - 1
        threshold = min(k, max(threshold_for(k), math.ceil(threshold_ratio * k)))
        return cls(participants, k, threshold, float(clip), float(max_weight), bits, rounding, lane=lane)

    @property
    def lane_bits(self) -> int:
        """Width of one masked word: `lane`, or else `lane_for(bits, n)`."""
        return self.lane or lane_for(self.bits, self.participants)

    @property
    def lane_dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(f"uint{self.lane_bits}")

    def _max_levels(self) -> int:
        return _max_levels(self.lane_bits, self.participants)

    @property
    def levels(self) -> int:
        """L: a client's code of one value lies in [0, L]; n of them sum below 2^lane_bits."""
        return (1 << self.bits) - 1 if self.bits else self._max_levels()

    @property
    def scale(self) -> float:
        """Code units per unit of (weight-fraction x value)."""
        return self.levels / (2 * self.clip)

    @property
    def weight_scale(self) -> float:
        """Code units per unit of weight: 1 (exact integer counts) when n x max_weight fits in
        32 bits (whatever the lane: a narrow lane carries the weight code in several digits)."""
        return min(1.0, _max_levels(32, self.participants) / self.max_weight)

    @property
    def weight_digit_bits(self) -> int:
        """Bits of the weight code per weight word: all of it in one word when n codes fit in
        a lane (always with 32-bit lanes), else digits small enough that n of them cannot wrap."""
        per_lane = ((1 << self.lane_bits) - 1) // self.participants
        if math.floor(self.max_weight * self.weight_scale) + 1 <= per_lane:
            return self.lane_bits
        return (per_lane + 1).bit_length() - 1

    @property
    def weight_words(self) -> int:
        """W: words after the M update words that carry the (masked) weight code."""
        code_bits = (math.floor(self.max_weight * self.weight_scale) + 1).bit_length()
        return max(1, math.ceil(code_bits / self.weight_digit_bits))

    def fingerprint(self) -> bytes:
        """8 bytes that differ when two parties would encode or decode differently."""
        packed = struct.pack(
            ">IIIddII",
            self.participants,
            self.neighbours,
            self.threshold,
            self.clip,
            self.max_weight,
            self.bits,
            self.lane_bits,
        )
        return hashlib.sha256(b"fedfleet-secagg/params" + packed).digest()[:8]


def lane_for(bits: int, participants: int) -> int:
    """The narrowest lane in which `participants` codes of `bits` bits (plus one level of
    headroom each) sum without wrapping: bits + ceil(log2 n) bits, rounded up to 8, 16 or 32;
    32 for bits 0 (the finest code)."""
    if not bits:
        return 32
    levels = (1 << bits) - 1
    return next((b for b in LANE_BITS if levels <= _max_levels(b, participants)), 32)


def _max_levels(lane_bits: int, participants: int) -> int:
    # one level of headroom per summand: a code of levels + 1 (float rounding) cannot wrap
    return ((1 << lane_bits) - 1) // participants - 1


def threshold_for(neighbours: int, colluders: int = 0) -> int:
    """The least t with 2t > k + c: honest neighbours each reveal one share kind of a client,
    so the aggregator plus c colluders cannot gather t of both kinds."""
    return max(2, (neighbours + colluders) // 2 + 1)


def failure_bound(participants: int, neighbours: int, threshold: int, dropout: float) -> float:
    """Union bound, over the n clients, that one keeps fewer than t surviving neighbours when
    each client drops independently with probability `dropout`: n * P[Binomial(k, 1 - d) < t].
    Survivors all keep t >= 1 surviving neighbours otherwise, so none is cut off."""
    k, d = neighbours, dropout
    one = sum(comb(k, j) * (1 - d) ** j * d ** (k - j) for j in range(threshold))
    return min(1.0, participants * one)


def derive_neighbours(participants: int, dropout: float, failure_probability: float) -> int:
    """The least k (k * n even, t = `threshold_for(k)`) whose `failure_bound` is at most
    `failure_probability`; n - 1 (every other client) if none is."""
    if not 0 <= dropout < 0.5:
        raise ValueError(f"dropout rate must be within [0, 0.5), got {dropout}")
    if not 0 < failure_probability < 1:
        raise ValueError(f"failure probability must be within (0, 1), got {failure_probability}")
    n = participants
    for k in range(2, n - 1):
        if k * n % 2 == 0 and failure_bound(n, k, threshold_for(k), dropout) <= failure_probability:
            return k
    return n - 1
