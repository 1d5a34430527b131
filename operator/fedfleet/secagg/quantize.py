"""Fixed-point code between float32 updates and lanes (uint32/16/8), sized so n codes cannot wrap.

A client with weight w (capped at max_weight) encodes each update value x as
    q = floor(clip(x, -c, c) * f * s + L/2 + u),   f = w / max_weight,  s = L / 2c,
with u ~ U[0, 1) from an AES-CTR stream (stochastic rounding: E[q] is exact) or u = 1/2
(nearest). The clip is against the exact (float64) c, and q is clamped to [0, L] before the
cast to the lane, so whatever float rounding does at the edges (a clip range such as 0.1 is
not exact in float32), n codes sum to at most nL < 2^lane: the sum never wraps.
The sum of m codes decodes to max_weight * (S - m L/2) / s = sum_u w_u clip(x_u), the weighted
sum the aggregator needs for FedAvg, and the weight word to sum_u w_u.

Everything runs in blocks over the thread's scratch arrays, allocated once (float64: a code
needs 32 bits of integer part plus fraction bits for the rounding noise).
"""

from __future__ import annotations

import os

import numpy as np

from fedfleet.secagg.masks import Keystream, Scratch
from fedfleet.secagg.params import SecAggParams

ONE_F32_BITS = np.uint32(0x3F800000)  # float32 1.0: OR-ed under 23 random mantissa bits -> U[1, 2)


class Encoder:
    """Client side: float32 values -> lane codes, one block (<= scratch size) at a time."""

    def __init__(self, params: SecAggParams, weight: float) -> None:
        if not np.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight must be positive and finite, got {weight}")
        self.params = params
        self.capped_weight = min(float(weight), params.max_weight)
        fraction = self.capped_weight / params.max_weight
        self._factor = fraction * params.scale
        self._clip = float(params.clip)
        self._top = float(params.levels)
        self._signed = np.dtype(f"int{params.lane_bits}")
        assert params.levels < 1 << (params.lane_bits - 1)  # n >= 3 summands: see `encode`
        stochastic = params.rounding == "stochastic"
        # u ~ U[1, 2) from the noise stream, so the offset carries the -1
        self._offset = params.levels / 2 - (1.0 if stochastic else -0.5)
        self._noise = Keystream(os.urandom(16)) if stochastic else None

    def encode(self, values: np.ndarray, out: np.ndarray, offset: int, scratch: Scratch) -> None:
        """out = codes of `values` (float32, len <= block), noise taken at word `offset`."""
        n = len(values)
        w, t = scratch.f64[:n], scratch.f64b[:n]
        np.copyto(w, values)  # widen first: float32 x float would round in float32
        np.clip(w, -self._clip, self._clip, out=w)  # the exact clip value; NaN stays NaN
        np.multiply(w, self._factor, out=w)
        if self._noise is not None:
            u = self._noise.fill(scratch, offset, n)
            np.right_shift(u, 9, out=u)
            np.bitwise_or(u, ONE_F32_BITS, out=u)
            np.copyto(t, u.view(np.float32))
            np.add(w, t, out=w)
        np.add(w, self._offset, out=w)
        np.clip(w, 0.0, self._top + 0.5, out=w)  # codes in [0, L] after the floor, whatever rounding did
        # L < 2^(lane - 1) for n >= 3, so the signed view of the lane holds every code, and the
        # float64 -> signed conversion is the vectorised one (about twice as fast as unsigned)
        signed = out.view(self._signed)
        with np.errstate(invalid="raise"):
            try:
                np.copyto(signed, w, casting="unsafe")  # non-negative: truncation is floor
            except FloatingPointError:
                out.fill(0)
                raise ValueError("the update contains NaN; refusing to encode it") from None

    def weight_code(self) -> int:
        """The weight word: w x weight_scale, stochastically rounded (exact for integer counts
        whenever n x max_weight fits in 32 bits)."""
        scaled = self.capped_weight * self.params.weight_scale
        whole = int(np.floor(scaled))
        fraction = scaled - whole
        if fraction and int.from_bytes(os.urandom(8), "big") < fraction * 2**64:
            whole += 1
        return whole

    def weight_lanes(self) -> np.ndarray:
        """The W weight words: the weight code, split into digits when one lane cannot hold n."""
        return _digits(self.weight_code(), self.params)


def _digits(code: int, params: SecAggParams) -> np.ndarray:
    bits = params.weight_digit_bits
    mask = (1 << bits) - 1
    digits = [(code >> (bits * i)) & mask for i in range(params.weight_words)]
    return np.array(digits, dtype=params.lane_dtype)


class Decoder:
    """Aggregator side: the unmasked sum of `summands` codes -> float32 weighted sums, in place."""

    def __init__(self, params: SecAggParams, summands: int) -> None:
        self.params = params
        self._factor = params.max_weight / params.scale
        self._shift = summands * params.levels / 2 * self._factor

    def decode(self, codes: np.ndarray, out: np.ndarray, scratch: Scratch) -> None:
        """out (float32, may alias `codes`' memory) = weighted sum encoded in `codes` (lanes)."""
        w = scratch.f64[: len(codes)]
        np.multiply(codes, self._factor, out=w, dtype=np.float64)
        np.subtract(w, self._shift, out=w)
        np.copyto(out, w, casting="same_kind")

    def weight(self, words: np.ndarray) -> float:
        """Sum of weights from the unmasked W weight words (digit sums, each below one lane)."""
        bits = self.params.weight_digit_bits
        code = sum(int(word) << (bits * i) for i, word in enumerate(words))
        return code / self.params.weight_scale
