"""One lineage record: what a round did, in a form whose digest does not depend on formatting.

A record is a flat JSON object. Its digest is the sha256 of the canonical JSON of its field
digests (one sha256 per field), so a verifier that finds a record whose digest still matches
its stored field digests can name the very field that was edited. Records are chained by
`previous_record_digest`; the newest record's digest is the lineage head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

FORMAT = "fedfleet.io/lineage/v1"
LINEAGE_FILE = "lineage.json"  # beside model.safetensors in every round directory

Record = dict[str, Any]


def canonical(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: the bytes every digest and signature covers."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def field_digests(record: Record) -> dict[str, str]:
    return {name: sha256(canonical(value)) for name, value in record.items()}


def digest_of_fields(fields: dict[str, str]) -> str:
    return sha256(canonical(fields))


def record_digest(record: Record) -> str:
    return digest_of_fields(field_digests(record))


def envelope(record: Record, signature: dict[str, str] | None) -> dict[str, Any]:
    """What lineage.json holds: the record, its field digests and digest, and the signature."""
    fields = field_digests(record)
    return {
        "record": record,
        "field_digests": fields,
        "digest": digest_of_fields(fields),
        "signature": signature,
    }


def pseudonym(salt: bytes, client_id: str) -> str:
    """A stable stand-in for a client id: the same client gets the same one in every round, and
    without the training's salt nobody can tell which client it is."""
    return "anon-" + hmac.new(salt, client_id.encode(), hashlib.sha256).hexdigest()[:16]


def site_of(client_id: str) -> str:
    """Client ids are `<site>-<index>` (controller.resources.client_id); anything else is its own site."""
    site, _, index = client_id.rpartition("-")
    return site if site and index.isdigit() else client_id
