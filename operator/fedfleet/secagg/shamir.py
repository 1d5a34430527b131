"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1)."""

from __future__ import annotations

import secrets
from functools import lru_cache

PRIME = 2**521 - 1  # a Mersenne prime, comfortably above any 256-bit secret
SHARE_BYTES = 66


def split(secret: bytes, threshold: int, holders: list[int]) -> dict[int, bytes]:
    """Shares of `secret` for holders with distinct non-zero x-coordinates; any `threshold` recover it."""
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must be within 1..{len(holders)}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
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
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine(shares: dict[int, bytes], threshold: int, size: int = 32) -> bytes:
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares, {threshold} needed")
    xs = tuple(sorted(shares)[:threshold])
    coefficients = _lagrange_at_zero(xs)
    value = sum(c * int.from_bytes(shares[x], "big") for c, x in zip(coefficients, xs, strict=True)) % PRIME
    return value.to_bytes(size, "big")
