"""`fedfleet lineage verify`: walk a state directory's rounds and check every link of the chain.

For each round directory, in order: its lineage.json is present and well formed; every field
still has the digest it was recorded with (so an edit is named down to the field); the record
digest matches those field digests and its signature; it describes this round and links to the
previous record and model; and the files it names (model.safetensors, round.json) still have
the recorded digests. A missing round shows as a gap in the numbers and a broken link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedfleet.aggregator.checkpoints import MODEL_FILE, RECORD_FILE, file_digest
from fedfleet.provenance.records import LINEAGE_FILE, Record, digest_of_fields, field_digests
from fedfleet.provenance.signing import embedded_key, fingerprint, signature_valid

ROUND_PREFIX = "round-"


@dataclass(frozen=True)
class Problem:
    round: int
    place: str  # the field or file at fault
    message: str

    def __str__(self) -> str:
        return f"round {self.round}: {self.place}: {self.message}"


@dataclass
class Verified:
    """What a state directory's lineage says, and everything found wrong with it."""

    records: list[Record] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    signers: list[str | None] = field(default_factory=list)  # key fingerprint per record
    problems: list[Problem] = field(default_factory=list)
    pinned: str | None = None  # fingerprint of the public key every record had to be signed with

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def head(self) -> str:
        return self.digests[-1] if self.digests else ""


def round_dirs(state_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (state_dir / "rounds").glob(f"{ROUND_PREFIX}*"):
        suffix = path.name.removeprefix(ROUND_PREFIX)
        if suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def verify_state(
    state_dir: Path,
    public_key: Ed25519PublicKey | None = None,
    require_signature: bool = False,
    expected_head: str = "",
) -> Verified:
    out = Verified()
    rounds = round_dirs(state_dir)
    if not rounds:
        out.problems.append(
            Problem(0, str(state_dir / "rounds"), "no checkpointed rounds: not a state directory?")
        )
        return out
    pinned = fingerprint(public_key) if public_key is not None else None
    out.pinned = pinned
    previous: tuple[int, Record, str] | None = None  # round, record, digest of the last good record
    seen_signed = False
    expected = 0
    for number, path in rounds:
        if number != expected:
            missing = f"round {expected}" if number == expected + 1 else f"rounds {expected}..{number - 1}"
            out.problems.append(Problem(number, f"rounds/{path.name}", f"{missing} missing before it"))
        expected = number + 1
        loaded = _load(path, number, out.problems)
        if loaded is None:
            previous = None
            continue
        record, stored, digest, signature = loaded
        _check_fields(number, record, stored, digest, out.problems)
        if record.get("round") != number:
            out.problems.append(
                Problem(
                    number,
                    f"{LINEAGE_FILE} round",
                    f"the record describes round {record.get('round')}, found in {path.name} "
                    "(records moved or reordered)",
                )
            )
        _check_link(number, record, previous, out.problems)
        _check_file(number, path / MODEL_FILE, record.get("model_digest"), out.problems)
        _check_file(number, path / RECORD_FILE, record.get("round_record_digest"), out.problems)
        signer = _check_signature(number, signature, digest, pinned, public_key, out.problems)
        if signature is None and (require_signature or pinned or seen_signed):
            why = "a signature is required" if (require_signature or pinned) else "earlier records are signed"
            out.problems.append(Problem(number, f"{LINEAGE_FILE} signature", f"unsigned, but {why}"))
        seen_signed = seen_signed or signer is not None
        out.records.append(record)
        out.digests.append(digest)
        out.signers.append(signer)
        previous = (number, record, digest)
    if expected_head and out.head != expected_head:
        last = rounds[-1][0]
        out.problems.append(
            Problem(
                last,
                "lineage head",
                f"the chain ends at {out.head or 'nothing'}, the published head is {expected_head} "
                "(rounds removed from the end, or another chain)",
            )
        )
    return out


def _load(path: Path, number: int, problems: list[Problem]) -> tuple[Record, dict[str, str], str, Any] | None:
    try:
        data = json.loads((path / LINEAGE_FILE).read_text())
        record, stored, digest = data["record"], data.get("field_digests") or {}, data["digest"]
        if not isinstance(record, dict) or not isinstance(stored, dict) or not isinstance(digest, str):
            raise TypeError("record and field_digests must be objects, digest a string")
        return record, stored, digest, data.get("signature")
    except FileNotFoundError:
        problems.append(Problem(number, LINEAGE_FILE, "missing: the round has no lineage record"))
    except (ValueError, KeyError, TypeError) as err:
        problems.append(Problem(number, LINEAGE_FILE, f"unreadable: {err}"))
    return None


def _check_fields(
    number: int, record: Record, stored: dict[str, str], digest: str, problems: list[Problem]
) -> None:
    """Name the edited field when the stored field digests are intact; else the record as a whole."""
    if digest_of_fields(stored) != digest:
        if digest_of_fields(field_digests(record)) != digest:
            problems.append(
                Problem(
                    number, LINEAGE_FILE, "the record does not match its digest (edited, field digests too)"
                )
            )
        return
    actual = field_digests(record)
    for name in sorted(set(stored) | set(actual)):
        if name not in actual:
            problems.append(Problem(number, f"field {name}", "removed from the record"))
        elif name not in stored:
            problems.append(Problem(number, f"field {name}", "added to the record after it was written"))
        elif actual[name] != stored[name]:
            problems.append(
                Problem(number, f"field {name}", "edited: its value does not match the recorded digest")
            )


def _check_link(
    number: int, record: Record, previous: tuple[int, Record, str] | None, problems: list[Problem]
) -> None:
    if number == 0:
        if record.get("previous_record_digest") is not None:
            problems.append(Problem(0, "field previous_record_digest", "the first record must not link back"))
        return
    if previous is None:
        problems.append(
            Problem(
                number, "field previous_record_digest", "the previous round's record is missing or unreadable"
            )
        )
        return
    before, prior, prior_digest = previous
    if record.get("previous_record_digest") != prior_digest:
        problems.append(
            Problem(
                number,
                "field previous_record_digest",
                f"does not link to round {before}'s record {abbreviate(prior_digest)} "
                "(a record in between was removed, replaced or reordered)",
            )
        )
    if record.get("previous_model_digest") != prior.get("model_digest"):
        problems.append(
            Problem(
                number,
                "field previous_model_digest",
                f"{abbreviate(record.get('previous_model_digest'))} is not round {before}'s model "
                f"{abbreviate(prior.get('model_digest'))}",
            )
        )


def _check_file(number: int, path: Path, recorded: Any, problems: list[Problem]) -> None:
    name = path.name
    if not path.exists():
        problems.append(Problem(number, name, "missing"))
        return
    actual = file_digest(path)
    if actual != recorded:
        problems.append(
            Problem(
                number,
                name,
                f"digest {abbreviate(actual)} is not the recorded {abbreviate(recorded)} "
                "(the file was replaced or edited)",
            )
        )


def _check_signature(
    number: int,
    signature: Any,
    digest: str,
    pinned: str | None,
    public_key: Ed25519PublicKey | None,
    problems: list[Problem],
) -> str | None:
    """The fingerprint of the key that validly signed `digest`, or None (unsigned or invalid)."""
    if signature is None:
        return None
    place = f"{LINEAGE_FILE} signature"
    try:
        key = public_key if public_key is not None else embedded_key(signature)
        named = str(signature["key_id"])
    except (KeyError, ValueError, TypeError) as err:
        problems.append(Problem(number, place, f"malformed: {err}"))
        return None
    if pinned is not None and named != pinned:
        problems.append(Problem(number, place, f"made by key {named}, not by the given public key {pinned}"))
        return None
    if not signature_valid(key, signature, digest):
        problems.append(Problem(number, place, f"does not verify with key {fingerprint(key)}"))
        return None
    return fingerprint(key)


def abbreviate(digest: Any) -> str:
    if not isinstance(digest, str) or not digest:
        return "none"
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else digest[:19]
