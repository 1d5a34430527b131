"""Gaussian noise for DP-FedAvg: std = noise_multiplier * clip_norm on the released sum.

Two placements of the same total noise:

- `central`: the aggregator adds N(0, (zC)^2) to the unmasked sum. It sees the sum noiseless.
- `distributed`: each of the n clients expected in the sum adds N(0, (zC)^2 / n) to its own
  clipped update before SecAgg masking; the n shares add up to the target, the aggregator
  never sees a noiseless sum, and no single client's share is enough noise on its own.
  If only s < n clients survive, the sum carries (zC)^2 s / n: an effective multiplier
  z sqrt(s / n), which is what the accountant must be charged (`effective_noise_multiplier`).

Noise comes from a PCG64DXSM generator seeded with 256 bits from the OS CSPRNG (`secrets`),
so nobody can predict or replay it; it is drawn in blocks into one preallocated buffer.
"""

from __future__ import annotations

import math
import secrets
from typing import Literal

import numpy as np

from fedfleet.privacy._arrays import DEFAULT_BLOCK, Update, blocks, check_block, tensors

NoiseMode = Literal["central", "distributed"]


def secure_rng() -> np.random.Generator:
    """A generator seeded from the OS CSPRNG: a fresh, unpredictable stream on every call."""
    return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(secrets.randbits(256))))


def _check(noise_multiplier: float, clip_norm: float, mode: str, expected_clients: int) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be positive and finite, got {clip_norm}")
    if mode not in ("central", "distributed"):
        raise ValueError(f"mode must be 'central' or 'distributed', got {mode!r}")
    if expected_clients < 1:
        raise ValueError(f"expected_clients must be >= 1, got {expected_clients}")


def noise_std(
    noise_multiplier: float, clip_norm: float, mode: NoiseMode = "central", expected_clients: int = 1
) -> float:
    """Std of the noise one party adds: the aggregator (central) or each client (distributed).

    In distributed mode `expected_clients` is the n whose shares make up the target noise: the
    round's cohort, or a planned minimum of survivors to stay at or above the target z when
    clients drop (more survivors then only add noise).
    """
    _check(noise_multiplier, clip_norm, mode, expected_clients)
    std = noise_multiplier * clip_norm
    return std if mode == "central" else std / math.sqrt(expected_clients)


def effective_noise_multiplier(
    noise_multiplier: float, mode: NoiseMode, expected_clients: int, survivors: int
) -> float:
    """The multiplier the released sum really carries, to charge the accountant with.

    Central: z, whoever survives (the aggregator adds it all). Distributed: z sqrt(s / n), with
    n the `expected_clients` each client divided its noise by and s the clients whose inputs
    are in the sum (0 when none are: then nothing is released).
    """
    _check(noise_multiplier, 1.0, mode, expected_clients)
    if survivors < 0:
        raise ValueError(f"survivors must be >= 0, got {survivors}")
    if mode == "central":
        return noise_multiplier
    return noise_multiplier * math.sqrt(survivors / expected_clients)


def add_gaussian_noise(
    update: Update,
    std: float,
    *,
    rng: np.random.Generator | None = None,
    block: int = DEFAULT_BLOCK,
) -> None:
    """Add N(0, std^2) independently to every value of `update`, in place.

    `rng` defaults to a fresh `secure_rng()`; pass one only to reproduce noise in tests, never
    in a deployment (seeded noise can be subtracted by whoever knows the seed).
    """
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be finite and >= 0, got {std}")
    check_block(block)
    arrays = tensors(update, writable=True)
    if std == 0 or not arrays:
        return
    gen = secure_rng() if rng is None else rng
    buffers: dict[np.dtype[np.floating], np.ndarray] = {}
    for a in arrays:
        if a.size == 0:
            continue
        buf = buffers.get(a.dtype)
        if buf is None:
            size = min(block, max(x.size for x in arrays if x.dtype == a.dtype))
            buf = buffers[a.dtype] = np.empty(size, dtype=a.dtype)
        for b in blocks(a, block):
            noise = buf[: b.size]
            gen.standard_normal(out=noise, dtype=a.dtype.type)
            np.multiply(noise, std, out=noise)
            np.add(b, noise, out=b)
