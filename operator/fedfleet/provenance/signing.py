"""Ed25519 keys for lineage records: made once per training, kept in a Secret (or the output dir).

A signature covers `fedfleet-lineage-v1:` + the record digest, so it can never be replayed as a
signature over anything else.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
_CONTEXT = b"fedfleet-lineage-v1:"


class LineageKeyError(ValueError):
    """A key file or PEM that is not a usable Ed25519 key; the message names it."""


def new_signing_key_pem() -> bytes:
    """A fresh private key as PKCS#8 PEM, for a Secret or a file."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    """Write a new private key to `path` (mode 0600); refuses to replace an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = new_signing_key_pem()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return load_signing_key(path)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise LineageKeyError(f"{path}: not a readable unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LineageKeyError(f"{path}: a {type(key).__name__}, lineage records need an Ed25519 key")
    return key


def load_public_key(pem_or_file: str) -> Ed25519PublicKey:
    """A public key given as PEM text (as published in training status) or as a file holding it."""
    text = pem_or_file.encode()
    if b"-----BEGIN" not in text:
        try:
            text = Path(pem_or_file).read_bytes()
        except OSError as err:
            raise LineageKeyError(
                f"{pem_or_file}: neither a PEM public key nor a readable file: {err}"
            ) from None
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError:
        try:  # a private key file is accepted too: its public half is what is compared
            private = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as err:
            raise LineageKeyError(f"{pem_or_file}: not a PEM Ed25519 key: {err}") from None
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise LineageKeyError(f"{pem_or_file}: a {type(key).__name__}, lineage uses Ed25519")
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key: short enough for a status field, unique in practice."""
    return f"sha256:{hashlib.sha256(raw_public(key)).hexdigest()}"


def sign(key: Ed25519PrivateKey, digest: str) -> dict[str, str]:
    public = key.public_key()
    return {
        "algorithm": ALGORITHM,
        "key_id": fingerprint(public),
        "public_key": base64.b64encode(raw_public(public)).decode(),
        "value": base64.b64encode(key.sign(_CONTEXT + digest.encode())).decode(),
    }


def embedded_key(signature: dict[str, str]) -> Ed25519PublicKey:
    """The public key a signature names; proves integrity, not who signed, until pinned."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"], validate=True))


def signature_valid(key: Ed25519PublicKey, signature: dict[str, str], digest: str) -> bool:
    try:
        key.verify(base64.b64decode(signature["value"], validate=True), _CONTEXT + digest.encode())
    except (InvalidSignature, ValueError, KeyError):
        return False
    return True
