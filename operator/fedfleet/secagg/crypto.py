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
ENDORSEMENT_BYTES = 32  # half of an HMAC-SHA512
CHANNEL_BYTES = 2 * KEY_BYTES  # a pair's channel: the AES-GCM key of its shares, then its MAC key
X25519_PRIME = 2**255 - 19
# u-coordinates (mod p) of the points of order dividing 8 on Curve25519 and dividing 4 on its
# twist: 0, 1, p - 1 and the two of order 8 (libsodium's list). X25519 with any clamped scalar
# (a multiple of 8 below both large prime orders) maps exactly these to the all-zero secret.
LOW_ORDER_U = frozenset(
    {
        0,
        1,
        X25519_PRIME - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


@functools.lru_cache(maxsize=65536)
def _text_field(text: str) -> bytes:
    """A string as `pack_strings` writes it (cached: client ids and purposes recur all round)."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def pack_strings(*parts: str | bytes | int) -> bytes:
    """Unambiguous concatenation (length-prefixed), for HKDF info and AES-GCM associated data."""
    out: list[bytes] = []
    for part in parts:
        if isinstance(part, str):
            out.append(_text_field(part))
            continue
        raw = part.to_bytes(8, "big") if isinstance(part, int) else part
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

    def agree(
        self, peer_public: bytes, info: bytes, salt: bytes | None = None, length: int = KEY_BYTES
    ) -> bytes:
        """`length` bytes only this pair can compute: HKDF-SHA256(X25519(mine, theirs), info),
        with `salt` (another secret of the pair) mixed in when given."""
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # wrong length, or a low-order point giving an all-zero secret
            raise AuthenticationFailed("unusable X25519 public key") from None
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(shared)


def check_public_key(raw: bytes) -> None:
    """Refuse a public key no honest neighbour could agree with: wrong length, or a low-order
    point (X25519 with it gives the all-zero secret). Decoded as X25519 does (RFC 7748: the top
    bit ignored, reduced mod p) and looked up in `LOW_ORDER_U`: arithmetic, where a trial
    key agreement would cost one X25519 per key."""
    if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
        raise AuthenticationFailed("unusable X25519 public key (wrong length)")
    if (int.from_bytes(raw, "little") & ((1 << 255) - 1)) % X25519_PRIME in LOW_ORDER_U:
        raise AuthenticationFailed("unusable X25519 public key (low order)")


def survivors_digest(context: bytes, survivors: tuple[str, ...]) -> bytes:
    """What a survivor endorses: SHA-256 of the round's survivor set, computed once per round."""
    packed = pack_strings("survivors", context) + b"".join(map(_text_field, survivors))
    return hashlib.sha256(packed).digest()  # = pack_strings("survivors", context, *survivors)


def endorsements(mac_key: bytes, sender: str, receiver: str, digest: bytes) -> tuple[bytes, bytes]:
    """(sender's tag to receiver, receiver's tag to sender) on the survivor set `digest`, under
    the pair's MAC key: one HMAC-SHA512, its first half the lower id's tag to the higher, its
    second half the other way. A tag convinces that one neighbour: the aggregator holds no key
    to make or move one, and the two directions differ, so a client's own tags reflected back
    to it count for nothing."""
    both = hmac.digest(mac_key, digest, hashlib.sha512)
    low_to_high, high_to_low = both[:ENDORSEMENT_BYTES], both[ENDORSEMENT_BYTES:]
    return (low_to_high, high_to_low) if sender < receiver else (high_to_low, low_to_high)


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
