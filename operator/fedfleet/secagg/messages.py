"""Wire encoding of SecAgg+ stage payloads: JSON with base64 bytes, strictly checked on decode."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fedfleet.secagg.crypto import ProtocolError

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(text: Any, size: int | None = None, what: str = "value") -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ProtocolError("INVALID_ARGUMENT", f"{what} is not base64") from None
    if size is not None and len(raw) != size:
        raise ProtocolError("INVALID_ARGUMENT", f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":")).encode()


def decode(payload: bytes, required: tuple[str, ...]) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            "RESOURCE_EXHAUSTED", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}"
        )
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("INVALID_ARGUMENT", "payload is not a SecAgg message") from None
    if not isinstance(message, dict) or any(key not in message for key in required):
        raise ProtocolError("INVALID_ARGUMENT", f"payload needs fields {', '.join(required)}")
    return message
