"""Shamir t-of-k sharing of 32-byte secrets over GF(p), p = 2^256 - 2^32 - 977 (secp256k1's prime).

A 256-bit prime field fits a 32-byte secret in one element, and Python's big integers make
sharing cheap (k x t multiplications). Secrets must lie below p: draw them with
`random_secret()`. Lagrange coefficients depend only on which holders answered; they are cached
per holder set (numerators and denominators are exact small integers, and one modular
inversion serves all t denominators).
"""

from __future__ import annotations

import secrets
from functools import lru_cache

PRIME = 2**256 - 2**32 - 977
SHARE_BYTES = 32


def random_secret() -> bytes:
    return secrets.randbelow(PRIME).to_bytes(SHARE_BYTES, "big")


def split(secret: bytes, threshold: int, holders: list[int]) -> dict[int, bytes]:
    """Shares for holders with distinct x in 1..2^32; any `threshold` of them recover `secret`."""
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must be within 1..{len(holders)}")
    if len(set(holders)) != len(holders) or any(not 0 < x < 2**32 for x in holders):
        raise ValueError("holder indices must be distinct and within 1..2^32-1")
    value = int.from_bytes(secret, "big")
    if value >= PRIME:
        raise ValueError("secret is not below the field prime; draw it with random_secret()")
    coefficients = [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in holders:
        y = 0
        for c in coefficients:  # Horner from the highest coefficient down to the secret
            y = (y + c) * x % PRIME
        shares[x] = ((y + value) % PRIME).to_bytes(SHARE_BYTES, "big")
    return shares


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """l_i(0) = prod_{j != i} x_j / prod_{j != i} (x_j - x_i) for the holder set xs (distinct).

    Numerators and denominators are exact small integers; the t denominators are inverted
    together with one modular inversion (Montgomery's trick)."""
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num *= xj
                den *= xj - xi
        nums.append(num)
        dens.append(den % PRIME)
    prefix = [1]
    for den in dens:
        prefix.append(prefix[-1] * den % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = nums[i] * inverse % PRIME * prefix[i] % PRIME
        inverse = inverse * dens[i] % PRIME
    return tuple(out)


def combine(shares: dict[int, bytes], threshold: int) -> bytes:
    """The secret from any `threshold` shares (the lowest x are used; extra shares are ignored)."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares, {threshold} needed")
    xs = tuple(sorted(shares)[:threshold])
    coefficients = lagrange_at_zero(xs)
    value = sum(c * int.from_bytes(shares[x], "big") for c, x in zip(coefficients, xs, strict=True)) % PRIME
    return value.to_bytes(SHARE_BYTES, "big")


def is_field_element(raw: bytes) -> bool:
    return len(raw) == SHARE_BYTES and int.from_bytes(raw, "big") < PRIME
