"""Key agreement and authenticated encryption for SecAgg+: X25519, HKDF-SHA256, AES-GCM."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class ProtocolError(ValueError):
    """A SecAgg+ message that must be refused; `code` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KeyPair:
    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key whose raw private bytes are a valid Shamir secret (below the field prime)."""
        from fedfleet.secagg.shamir import random_secret

        return cls(X25519PrivateKey.from_private_bytes(random_secret()))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(raw))

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(*RAW)

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def agree(self, peer_public: bytes, info: bytes) -> bytes:
        """A 32-byte key only this pair can compute, bound to `info` (training, round, purpose)."""
        if len(peer_public) != KEY_BYTES:
            raise ProtocolError("INVALID_ARGUMENT", "public keys are 32 bytes")
        shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, blob: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise ProtocolError("PERMISSION_DENIED", "share ciphertext fails authentication") from None
