"""The fixed-point code never wraps: whatever the clip range, weight, lane width or value, a
client's code lies in [0, L] and n codes sum below 2^lane, so the released sum keeps its sign.
(Before the exact clip, a clip range not exact in float32, such as 0.1, let a saturated value
at the weight cap encode above L, and the sum of 16 such codes wrapped.)"""

from __future__ import annotations

import numpy as np
from fedfleet.secagg import SecAggParams
from fedfleet.secagg.masks import thread_scratch
from fedfleet.secagg.quantize import Decoder, Encoder
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.secagg.protocol import Fleet, bound, plain, run_round

AWKWARD_CLIPS = [0.1, 0.3, 1 / 3, 0.7, 2.2, 1e-6, 1e6, 8.0]


def saturated(clip: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Values at and around the clip range: +-clip as float32 (which may lie beyond it), the
    float32 neighbours of it, far beyond it, the largest float32, infinities, and some inside."""
    c32 = np.float32(clip)
    edges = [c32, np.nextafter(c32, np.float32(np.inf)), np.nextafter(c32, np.float32(0))]
    edges += [c32 * np.float32(1.5), np.finfo(np.float32).max, np.float32(np.inf), np.float32(3e38)]
    edges += [-e for e in edges] + [np.float32(0)]
    inside = rng.uniform(-clip, clip, size).astype(np.float32)
    return np.concatenate([np.array(edges, dtype=np.float32), inside])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(n=16, clip=0.1, max_weight=1_000.0, bits=0, lane=0, rounding="stochastic", at_cap=True, seed=1)
@example(n=16, clip=0.1, max_weight=1_000.0, bits=0, lane=32, rounding="nearest", at_cap=True, seed=1)
@example(n=3, clip=0.3, max_weight=1_000.0, bits=0, lane=0, rounding="nearest", at_cap=True, seed=1)
@example(n=5, clip=0.1, max_weight=1_000.0, bits=0, lane=16, rounding="stochastic", at_cap=True, seed=1)
@example(n=3, clip=0.1, max_weight=1_000.0, bits=0, lane=8, rounding="stochastic", at_cap=True, seed=1)
@example(n=16, clip=0.1, max_weight=1_000.0, bits=12, lane=0, rounding="stochastic", at_cap=True, seed=1)
@example(n=16, clip=0.3, max_weight=1_000.0, bits=4, lane=0, rounding="nearest", at_cap=True, seed=1)
@given(
    n=st.integers(3, 2_000),
    clip=st.one_of(st.sampled_from(AWKWARD_CLIPS), st.floats(1e-6, 1e6)),
    max_weight=st.one_of(st.sampled_from([1.0, 1_000.0, 100_000.0]), st.floats(1.0, 1e9)),
    bits=st.sampled_from([0, 0, 0, 2, 4, 6, 8, 12, 16, 20, 24]),  # 0: the finest code, the tightest
    lane=st.sampled_from([0, 8, 16, 32]),
    rounding=st.sampled_from(["stochastic", "nearest"]),
    at_cap=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_codes_stay_within_the_top_level_and_n_of_them_never_wrap(
    n: int,
    clip: float,
    max_weight: float,
    bits: int,
    lane: int,
    rounding: str,
    at_cap: bool,
    seed: int,
) -> None:
    try:
        params = SecAggParams.build(
            n,
            neighbours=2,
            clip=clip,
            max_weight=max_weight,
            bits=bits,
            lane=lane,
            rounding=rounding,  # type: ignore[arg-type]
        )
    except ValueError:
        assume(False)  # a code width the lane cannot hold for n summands: refused, as it should be
        raise
    rng = np.random.default_rng(seed)
    values = saturated(clip, 200, rng)
    weight = max_weight * (3.0 if at_cap else rng.uniform(0.01, 1.0))  # at or above the cap
    codes = np.empty(len(values), dtype=params.lane_dtype)
    Encoder(params, weight).encode(values, codes, 0, thread_scratch())
    assert int(codes.max()) <= params.levels
    total = codes.astype(np.uint64) * n  # n clients sending these very codes
    assert int(total.max()) < 2**params.lane_bits  # the lane sum of n of them cannot wrap
    summed = total.astype(params.lane_dtype)
    decoded = np.empty(len(values), dtype=np.float32)
    Decoder(params, n).decode(summed, decoded, thread_scratch())
    w = min(weight, max_weight)
    expected = n * w * np.clip(values.astype(np.float64), -clip, clip)
    step = max_weight / params.scale
    assert np.all(np.abs(decoded - expected) <= n * step * 1.01 + np.abs(expected) * 2.0**-22)
    assert np.all(
        np.sign(decoded[np.abs(expected) > n * step * 1.01])
        == np.sign(expected[np.abs(expected) > n * step * 1.01])
    )


def test_clip_0_1_at_the_weight_cap_releases_the_right_sign() -> None:
    """The review's case: 16 clients, clip range 0.1, every value saturated, weights at the cap.
    Every value used to come back with the wrong sign for some lanes; now the whole round is exact."""
    n, m = 16, 64
    values = np.where(np.arange(m) % 2 == 0, np.float32(0.1), np.float32(-5.0)).astype(np.float32)
    updates = {f"c{i:02d}": values.copy() for i in range(n)}
    fleet = Fleet(
        SecAggParams.build(n, clip=0.1, max_weight=1_000.0), updates, dict.fromkeys(updates, 1_000.0)
    )
    released, weight = run_round(fleet)
    expected, expected_weight = plain(fleet, set(updates))
    assert weight == expected_weight == n * 1_000.0
    assert np.all(np.abs(released - expected) <= bound(fleet, n, expected))
    assert np.all(np.sign(released) == np.where(np.arange(m) % 2 == 0, 1.0, -1.0))
