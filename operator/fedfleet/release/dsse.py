"""DSSE envelopes (https://github.com/secure-systems-lab/dsse) over in-toto statements, signed
with the training's Ed25519 lineage key: what the attestation in the registry carries."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedfleet.provenance.signing import fingerprint

PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024  # a statement lists one byproduct per round: bounded, not tiny


class ReleaseError(ValueError):
    """A release that cannot be made, or a pulled one that does not verify; the message says why."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_statement(statement: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {
                "keyid": fingerprint(key.public_key()),
                "sig": base64.b64encode(key.sign(pae(PAYLOAD_TYPE, payload))).decode(),
            }
        ],
    }


def verify_envelope(raw: bytes, key: Ed25519PublicKey) -> dict[str, Any]:
    """The statement, once a signature by `key` over it checks out; ReleaseError otherwise."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise ReleaseError(f"attestation: {len(raw)} bytes, more than {MAX_ENVELOPE_BYTES}")
    try:
        envelope = json.loads(raw)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
        payload_type = envelope["payloadType"]
    except (ValueError, KeyError, TypeError) as err:
        raise ReleaseError(f"attestation: not a DSSE envelope: {err}") from None
    if payload_type != PAYLOAD_TYPE:
        raise ReleaseError(f"attestation: payload type {payload_type!r}, expected {PAYLOAD_TYPE}")
    for signature in signatures:
        try:
            key.verify(signature, pae(payload_type, payload))
        except InvalidSignature:
            continue
        statement = json.loads(payload)
        if not isinstance(statement, dict):
            raise ReleaseError("attestation: the signed payload is not an in-toto statement")
        return statement
    raise ReleaseError(f"attestation: no signature by the released key {fingerprint(key)}")
