"""`fedfleet model pull --verify`: a pulled release is used only when its attestation is signed
by the released key (or the key the caller pins), the statement's subject is the model file's
digest, and the statement's lineage ends at the head and model the artifact names."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedfleet.aggregator.checkpoints import MODEL_FILE, file_digest
from fedfleet.provenance.export import STATEMENT_FILE
from fedfleet.provenance.signing import LineageKeyError, fingerprint, load_public_key
from fedfleet.release.bundle import PUBLIC_KEY_FILE
from fedfleet.release.dsse import ReleaseError, verify_envelope
from fedfleet.release.oci import Pulled


@dataclass(frozen=True)
class VerifiedRelease:
    model_digest: str
    lineage_head: str
    key_fingerprint: str
    rounds: int


def verify_release(pulled: Pulled, pinned: Ed25519PublicKey | None = None) -> VerifiedRelease:
    for name in (MODEL_FILE, STATEMENT_FILE, PUBLIC_KEY_FILE):
        if name not in pulled.files:
            raise ReleaseError(f"the release has no {name}")
    try:
        released = load_public_key(str(pulled.files[PUBLIC_KEY_FILE]))
    except LineageKeyError as err:
        raise ReleaseError(f"{PUBLIC_KEY_FILE}: {err}") from None
    key = pinned or released
    if fingerprint(released) != fingerprint(key):
        raise ReleaseError(
            f"the release's key {fingerprint(released)} is not the pinned key {fingerprint(key)}"
        )
    statement = verify_envelope(pulled.envelope, key)
    if json.loads(pulled.files[STATEMENT_FILE].read_text()) != statement:
        raise ReleaseError(f"{STATEMENT_FILE} differs from the signed statement in the attestation")
    model = file_digest(pulled.files[MODEL_FILE])
    subjects = [f"sha256:{s['digest'].get('sha256', '')}" for s in statement.get("subject") or []]
    if subjects != [model]:
        raise ReleaseError(f"{MODEL_FILE} has digest {model}; the signed statement is about {subjects}")
    lineage = ((statement.get("predicate") or {}).get("runDetails") or {}).get("byproducts") or []
    if not lineage:
        raise ReleaseError("the signed statement lists no lineage records")
    head = f"sha256:{lineage[-1]['digest'].get('sha256', '')}"
    if lineage[-1].get("annotations", {}).get("modelDigest") != model:
        raise ReleaseError(f"the lineage head {head} is not about the released model {model}")
    named = pulled.annotations.get("io.fedfleet.lineage.head")
    if named and named != head:
        raise ReleaseError(f"the artifact names lineage head {named}; the signed statement ends at {head}")
    return VerifiedRelease(model, head, fingerprint(key), len(lineage) - 1)
