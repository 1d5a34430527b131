"""Clipping: the joint L2 bound holds for every update, and updates within it are untouched."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from fedfleet.privacy import clip_update, l2_norm

C = 1.5


def exact_norm(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(a, dtype=np.float64) ** 2) for a in arrays)))


def random_update(rng: np.random.Generator, target_norm: float) -> dict[str, np.ndarray]:
    """Tensors of assorted shapes and layouts (C, Fortran, strided views, 0-d), scaled to a norm."""
    base = rng.standard_normal((12, 10)).astype(np.float32)
    update: dict[str, np.ndarray] = {
        "w": rng.standard_normal((int(rng.integers(1, 40)), 7)).astype(np.float32),
        "b": rng.standard_normal(int(rng.integers(1, 9))).astype(np.float32),
        "f": np.asfortranarray(rng.standard_normal((5, 6))).astype(np.float32),
        "strided": base[:, ::3],
        "scalar": np.array(rng.standard_normal(), dtype=np.float32),
        "f64": rng.standard_normal(11),
    }
    scale = target_norm / exact_norm(list(update.values()))
    for a in update.values():
        np.multiply(a, a.dtype.type(scale), out=a)
    return update


def test_bound_holds_for_every_update_and_small_ones_stay_bit_identical() -> None:
    rng = np.random.default_rng(20240601)
    clipped = kept = 0
    # log-uniform norms from C/10 to 10 C, plus norms right at the bound
    targets = [*(C * 10 ** rng.uniform(-1, 1, 300)), C, C * (1 - 1e-7), C * (1 + 1e-7)]
    for i, target in enumerate(targets):
        update = random_update(rng, float(target))
        before = {k: v.copy() for k, v in update.items()}
        norm_before = exact_norm(list(before.values()))
        result = clip_update(update, C, block=int(rng.choice([7, 64, 1 << 16])))
        after = exact_norm(list(update.values()))

        assert after <= C, (i, after)
        assert result.norm == pytest.approx(norm_before, rel=1e-12)
        if norm_before <= C:
            kept += 1
            assert result.scale == 1.0 and not result.clipped
            for k in update:
                assert update[k].tobytes() == before[k].tobytes(), (i, k)
        else:
            clipped += 1
            assert result.clipped and result.scale < 1.0
            assert after == pytest.approx(C, rel=1e-6)  # clipped to the bound, not below it
            for k in update:  # one common factor: the direction is kept
                np.testing.assert_allclose(update[k], before[k] * result.scale, rtol=1e-6, atol=0)
    assert clipped > 100 and kept > 100


def test_flat_vector_and_strided_view_are_clipped_in_place() -> None:
    rng = np.random.default_rng(1)
    vec = rng.standard_normal(10_001).astype(np.float32)
    result = clip_update(vec, 2.0, block=1000)
    assert result.clipped and exact_norm([vec]) <= 2.0

    base = rng.standard_normal((50, 40)).astype(np.float32)
    untouched = base[:, 1::2].copy()
    view = base[:, ::2]
    clip_update({"v": view}, 0.5)
    assert exact_norm([base[:, ::2]]) <= 0.5  # written through to the base array
    assert np.array_equal(base[:, 1::2], untouched)  # and nothing outside the view


def test_l2_norm_is_joint_over_tensors_and_accurate() -> None:
    rng = np.random.default_rng(2)
    update: dict[str, np.ndarray] = {
        "a": rng.standard_normal(3000).astype(np.float32),
        "b": rng.standard_normal((40, 7)),
    }
    assert l2_norm(update, block=100) == pytest.approx(exact_norm(list(update.values())), rel=1e-13)
    assert l2_norm({}) == 0.0
    assert clip_update({}, 1.0).scale == 1.0


def test_bad_updates_are_refused_before_anything_changes() -> None:
    good = np.full(10, 3.0, dtype=np.float32)
    for bad in (np.array([1.0, np.nan], dtype=np.float32), np.array([np.inf], dtype=np.float32)):
        update: dict[str, np.ndarray] = {"good": good.copy(), "bad": bad}
        with pytest.raises(ValueError, match="non-finite"):
            clip_update(update, 1.0)
        assert np.array_equal(update["good"], good)

    frozen = good.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        clip_update({"a": good.copy(), "b": frozen}, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        clip_update({"i": np.ones(3, dtype=np.int32)}, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        clip_update(np.ones(3, dtype=np.float16), 1.0)
    for c in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="clip_norm"):
            clip_update(good.copy(), c)


def test_no_full_size_copy() -> None:
    big = np.full(4_000_000, 1e-3, dtype=np.float32)  # 16 MB, norm 2
    tracemalloc.start()
    try:
        result = clip_update({"big": big}, 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.clipped
    assert peak < 1_000_000, peak  # one 512 KiB float64 scratch block, not 16 MB
