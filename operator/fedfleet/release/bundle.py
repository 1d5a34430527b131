"""What a release holds, built from a verified state directory: the final model (with its
adapter_config.json when the checkpoint has one), the in-toto statement, the model card and
the public key that verifies the lineage."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfleet.aggregator.checkpoints import MODEL_FILE
from fedfleet.provenance.export import MODEL_CARD_FILE, STATEMENT_FILE, statement, write_export
from fedfleet.provenance.signing import public_key_pem
from fedfleet.provenance.verify import round_dirs, verify_state
from fedfleet.release.dsse import ReleaseError, sign_statement

PUBLIC_KEY_FILE = "lineage-public-key.pem"
ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class Bundle:
    directory: Path
    files: list[str]  # names in `directory`, in push order (the model first)
    envelope: dict[str, object]  # DSSE over the in-toto statement
    model_digest: str  # sha256:... of the model file: the statement's subject
    lineage_head: str


def build_bundle(
    state_dir: Path, key: Ed25519PrivateKey, out_dir: Path, extra_files: dict[str, bytes] | None = None
) -> Bundle:
    """Refuses a lineage that does not verify under `key`'s public half: a release is signed
    by the same key as every round. `extra_files`: the task's (`Task.release_files`)."""
    public = key.public_key()
    verified = verify_state(state_dir, public, require_signature=True)
    if not verified.ok:
        problems = "; ".join(map(str, verified.problems[:3]))
        raise ReleaseError(f"{state_dir}: the lineage does not verify, nothing released: {problems}")
    out_dir.mkdir(parents=True, exist_ok=True)
    final_dir = dict(round_dirs(state_dir))[verified.records[-1]["round"]]
    shutil.copyfile(final_dir / MODEL_FILE, out_dir / MODEL_FILE)
    files = [MODEL_FILE]
    for name, content in (extra_files or {}).items():
        if name != ADAPTER_CONFIG_FILE:
            raise ReleaseError(f"a release carries no {name!r}")  # names the registry layers know
        (out_dir / name).write_bytes(content)
        files.append(name)
    write_export(verified, out_dir)
    (out_dir / PUBLIC_KEY_FILE).write_text(public_key_pem(public))
    files += [STATEMENT_FILE, MODEL_CARD_FILE, PUBLIC_KEY_FILE]
    return Bundle(
        out_dir,
        files,
        sign_statement(statement(verified), key),
        verified.records[-1]["model_digest"],
        verified.head,
    )
