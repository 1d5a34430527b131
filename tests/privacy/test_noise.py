"""Noise: the released sum carries std z*C in both modes, and z*sqrt(s/n)*C with dropouts.

Tolerances: for N iid normal samples the sample std has relative standard error 1/sqrt(2N)
(0.16% at N = 200,000) and the mean has standard error sigma/sqrt(N); we allow 5 standard
errors (tests with fixed seeds are deterministic; with the OS-seeded generator 6, a false
failure once in 5e8 runs). The dropout case differs from the target by 16%, 100 standard errors.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from fedfleet.privacy import (
    add_gaussian_noise,
    clip_update,
    effective_noise_multiplier,
    noise_std,
    secure_rng,
)

D = 200_000  # values per update: the sample size of each std estimate
N_CLIENTS = 10
Z, C = 1.1, 0.8
SE = 1 / math.sqrt(2 * D)  # relative standard error of a sample std


def clipped_updates(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = [
        rng.standard_normal(D).astype(np.float32) * np.float32(0.01 * (i + 1)) for i in range(N_CLIENTS)
    ]
    for u in updates:
        clip_update(u, C)
    return updates


def check_gaussian(noise: np.ndarray, sigma: float, k: float = 5.0) -> None:
    n = noise.size
    assert abs(float(noise.std()) / sigma - 1) < k * SE * math.sqrt(D / n)
    assert abs(float(noise.mean())) < k * sigma / math.sqrt(n)
    p = math.erf(1 / math.sqrt(2))  # P(|x| < sigma) = 0.6827 for a Gaussian
    assert abs(float(np.mean(np.abs(noise) < sigma)) - p) < k * math.sqrt(p * (1 - p) / n)


def float32_sum(updates: list[np.ndarray]) -> np.ndarray:
    """What the aggregator releases before noise: the float32 sum."""
    out = np.zeros(D, np.float32)
    for u in updates:
        out += u
    return out


def released_sum_noise(updates: list[np.ndarray], released: np.ndarray) -> np.ndarray:
    clean = np.zeros(D)
    for u in updates:
        clean += u
    return released.astype(np.float64) - clean


def test_std_formulas() -> None:
    assert noise_std(Z, C) == pytest.approx(Z * C)
    assert noise_std(Z, C, "distributed", 16) == pytest.approx(Z * C / 4)
    assert effective_noise_multiplier(Z, "central", 10, 3) == Z
    assert effective_noise_multiplier(Z, "distributed", 10, 10) == pytest.approx(Z)
    assert effective_noise_multiplier(Z, "distributed", 10, 7) == pytest.approx(Z * math.sqrt(0.7))
    assert effective_noise_multiplier(Z, "distributed", 10, 0) == 0.0
    with pytest.raises(ValueError):
        noise_std(-1.0, C)
    with pytest.raises(ValueError):
        noise_std(Z, 0.0)
    with pytest.raises(ValueError):
        noise_std(Z, C, "distributed", 0)
    with pytest.raises(ValueError):
        effective_noise_multiplier(Z, "distributed", 10, -1)


def test_central_noise_on_the_sum() -> None:
    updates = clipped_updates(0)
    released = float32_sum(updates)
    add_gaussian_noise(released, noise_std(Z, C, "central"), rng=np.random.default_rng(1))
    check_gaussian(released_sum_noise(updates, released), Z * C)


def test_distributed_noise_sums_to_the_target_with_all_clients() -> None:
    updates = clipped_updates(2)
    rng = np.random.default_rng(3)
    std = noise_std(Z, C, "distributed", N_CLIENTS)
    noisy = [u.copy() for u in updates]
    for u in noisy:
        add_gaussian_noise(u, std, rng=rng)
    share = noisy[0].astype(np.float64) - updates[0]
    check_gaussian(share, Z * C / math.sqrt(N_CLIENTS))  # one share: a tenth of the variance
    released = float32_sum(noisy)
    check_gaussian(released_sum_noise(updates, released), Z * C)


def test_distributed_noise_with_dropouts_matches_the_effective_multiplier() -> None:
    updates = clipped_updates(4)
    rng = np.random.default_rng(5)
    std = noise_std(Z, C, "distributed", N_CLIENTS)
    survivors = [u.copy() for u in updates[:7]]
    for u in survivors:
        add_gaussian_noise(u, std, rng=rng)
    released = float32_sum(survivors)
    noise = released_sum_noise(updates[:7], released)
    z_eff = effective_noise_multiplier(Z, "distributed", N_CLIENTS, 7)
    check_gaussian(noise, z_eff * C)
    assert float(noise.std()) < Z * C * (1 - 50 * SE)  # clearly less than the configured noise


def test_default_generator_is_os_seeded_and_correct() -> None:
    a, b = np.zeros(D, np.float32), np.zeros(D, np.float32)
    add_gaussian_noise(a, 2.0)
    add_gaussian_noise(b, 2.0)
    assert not np.array_equal(a, b)  # a fresh unpredictable stream per call
    check_gaussian(a.astype(np.float64), 2.0, k=6.0)
    assert not np.array_equal(secure_rng().integers(0, 2**63, 4), secure_rng().integers(0, 2**63, 4))


def test_every_tensor_and_layout_gets_noise_in_place() -> None:
    base = np.zeros((400, 300), np.float32)
    update: dict[str, np.ndarray] = {
        "f32": np.zeros(50_000, np.float32),
        "f64": np.zeros((250, 200)),
        "strided": base[:, ::3],
    }
    add_gaussian_noise(update, 0.5, rng=np.random.default_rng(6), block=999)
    for a in update.values():
        check_gaussian(a.astype(np.float64).ravel(), 0.5)
    assert update["f32"].dtype == np.float32 and update["f64"].dtype == np.float64
    assert np.all(base[:, 1::3] == 0) and np.all(base[:, 2::3] == 0)  # only the view was written
    assert np.all(base[:, ::3] != 0)


def test_zero_std_is_a_no_op_and_bad_input_is_refused() -> None:
    x = np.arange(5, dtype=np.float32)
    add_gaussian_noise(x, 0.0)
    assert np.array_equal(x, np.arange(5, dtype=np.float32))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="std"):
            add_gaussian_noise(x, bad)
    with pytest.raises(TypeError):
        add_gaussian_noise(np.zeros(3, np.int64), 1.0)


def test_no_full_size_buffer() -> None:
    big = np.zeros(4_000_000, np.float32)  # 16 MB
    tracemalloc.start()
    try:
        add_gaussian_noise({"big": big}, 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # one 256 KiB block buffer
    assert float(big.std()) == pytest.approx(1.0, rel=0.01)
