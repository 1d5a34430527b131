"""Key agreement and authenticated encryption: X25519, HKDF-SHA256, AES-128-GCM.

Every derived key is bound by its HKDF `info` to the round (training, round number), to its
purpose, and to the unordered pair of clients, so no key is ever reused across rounds or pairs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedfleet.secagg import shamir
from fedfleet.secagg.errors import AuthenticationFailed

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SHARE_PLAINTEXT_BYTES = 2 * shamir.SHARE_BYTES  # a share of b_u, then a share of s_sk_u
SEALED_SHARE_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + TAG_BYTES
ENDORSEMENT_BYTES = 32  # HMAC-SHA256
_PROBE = X25519PrivateKey.generate()


def pack_strings(*parts: str | bytes | int) -> bytes:
    """Unambiguous concatenation (length-prefixed), for HKDF info and AES-GCM associated data."""
    out: list[bytes] = []
    for part in parts:
        if isinstance(part, int):
            raw = part.to_bytes(8, "big")
        else:
            raw = part.encode() if isinstance(part, str) else part
        out += (len(raw).to_bytes(2, "big"), raw)
    return b"".join(out)


class KeyPair:
    """An X25519 key pair of one round. The masking key's private bytes are a Shamir secret,
    so they are drawn below the field prime (indistinguishable from uniform: p > 2^256 - 2^33)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(shamir.random_secret()))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def agree(self, peer_public: bytes, info: bytes, salt: bytes | None = None) -> bytes:
        """32 bytes only this pair can compute: HKDF-SHA256(X25519(mine, theirs), info), with
        `salt` (another secret of the pair) mixed in when given."""
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # wrong length, or a low-order point giving an all-zero secret
            raise AuthenticationFailed("unusable X25519 public key") from None
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(shared)


@functools.lru_cache(maxsize=4096)  # long-term keys repeat every round; failures are not cached
def check_public_key(raw: bytes) -> None:
    """Refuse a public key no honest neighbour could agree with: wrong length, or a low-order
    point (X25519 with it gives the all-zero secret, which `exchange` refuses)."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise AuthenticationFailed("unusable X25519 public key (wrong length or low order)") from None


def survivors_statement(context: bytes, survivors: tuple[str, ...]) -> bytes:
    return pack_strings("survivors", context, *survivors)


def endorsement(channel_key: bytes, statement: bytes) -> bytes:
    """A MAC of the survivor set (`survivors_statement`) under the pair's channel key: it
    convinces that one neighbour, and nobody without the key (the aggregator) can make or move it."""
    mac_key = hmac.digest(channel_key, b"fedfleet-secagg/consistency", hashlib.sha256)
    return hmac.digest(mac_key, statement, hashlib.sha256)


def pair_info(purpose: str, context: bytes, a: str, b: str) -> bytes:
    """HKDF info for a pair key: the same for (a, b) and (b, a)."""
    low, high = sorted((a, b))
    return pack_strings("fedfleet-secagg", purpose, context, low, high)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-GCM with the first 16 key bytes (AES-128) and a random 96-bit nonce prepended."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key[:16]).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, blob: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(key[:16]).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise AuthenticationFailed(
            "an encrypted share fails authentication (tampered or misaddressed)"
        ) from None
