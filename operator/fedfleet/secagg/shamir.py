"""Shamir t-of-n secret sharing of 32-byte secrets over GF(p), p = 2^256 - 2^32 - 977.

p is secp256k1's field prime; secrets must be below it, so callers draw them with
`random_secret()` (a 256-bit field keeps the big-integer work ~4x cheaper than a 521-bit one).
"""

from __future__ import annotations

import secrets
from functools import lru_cache

PRIME = 2**256 - 2**32 - 977
SHARE_BYTES = 32


def random_secret() -> bytes:
    return secrets.randbelow(PRIME).to_bytes(32, "big")


def split(secret: bytes, threshold: int, holders: list[int]) -> dict[int, bytes]:
    """Shares of `secret` for holders with distinct non-zero x-coordinates; any `threshold` recover it."""
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must be within 1..{len(holders)}")
    value = int.from_bytes(secret, "big")
    if value >= PRIME:
        raise ValueError("secret is not below the field prime; draw it with random_secret()")
    coefficients = [value] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in holders:
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


@lru_cache(maxsize=4096)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients for a set of x-coordinates; cached because survivor sets repeat per round."""
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        nums.append(num)
        dens.append(den)
    # one modular inversion for all denominators (Montgomery's trick)
    prefix = [1]
    for den in dens:
        prefix.append(prefix[-1] * den % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = nums[i] * inverse * prefix[i] % PRIME
        inverse = inverse * dens[i] % PRIME
    return tuple(out)


def combine(shares: dict[int, bytes], threshold: int, size: int = 32) -> bytes:
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares, {threshold} needed")
    xs = tuple(sorted(shares)[:threshold])
    coefficients = _lagrange_at_zero(xs)
    value = sum(c * int.from_bytes(shares[x], "big") for c, x in zip(coefficients, xs, strict=True)) % PRIME
    return value.to_bytes(size, "big")
