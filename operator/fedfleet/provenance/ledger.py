"""The aggregator's side of lineage: one record per checkpoint, written inside its atomic unit.

`attach` is handed to `CheckpointStore.save` as the checkpoint's attachment, so `lineage.json`
is written into the round's temporary directory and fsynced and renamed with the model it
describes: after a kill -9 there is either a checkpoint with its record or neither. The head
moves only once the checkpoint is durable (`advance`), which is also how a restart resumes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfleet import __version__
from fedfleet.aggregator.checkpoints import RECORD_FILE, file_digest
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.logs import get_logger
from fedfleet.provenance.base import base_model_digest
from fedfleet.provenance.records import FORMAT, LINEAGE_FILE, Record, envelope, pseudonym, site_of
from fedfleet.provenance.signing import fingerprint, public_key_pem, sign

SALT_FILE = "lineage-salt"  # in the state dir, beside rounds/: re-identifies pseudonyms; never exported


def iso(unix: float | None) -> str | None:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat() if unix else None


def _spec_block(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True) if value is not None else None


class Ledger:
    def __init__(
        self, training: str, spec: FederatedTrainingSpec, state_dir: Path, key: Ed25519PrivateKey | None
    ) -> None:
        self.training, self.spec, self.key = training, spec, key
        self.log = get_logger(component="lineage", training=training)
        self.salt = _salt(state_dir / SALT_FILE) if spec.lineage.pseudonymize else None
        self.head = ""  # digest of the newest durable record
        self._last_model_digest: str | None = None
        self._base: dict[str, Any] | None = None
        if key is None:
            self.log.warning(
                "lineage.unsigned", reason="no --lineage-key: records are chained but not signed"
            )
        else:
            self.log.info("lineage.signing", key_id=self.key_fingerprint)

    @property
    def public_key_pem(self) -> str:
        return public_key_pem(self.key.public_key()) if self.key is not None else ""

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self.key.public_key()) if self.key is not None else ""

    def advance(self, checkpoint_dir: Path, model_digest: str) -> None:
        """The checkpoint in `checkpoint_dir` is durable: its record is the new head."""
        path = checkpoint_dir / LINEAGE_FILE
        if path.exists():
            self.head = json.loads(path.read_text())["digest"]
        else:  # a state dir from before lineage: the chain starts at the next record
            self.log.warning("lineage.missing", checkpoint=str(checkpoint_dir))
            self.head = ""
        self._last_model_digest = model_digest

    def attach(self, tmp_dir: Path, checkpoint: dict[str, Any]) -> None:
        """Write the record of the checkpoint being built in `tmp_dir` (a CheckpointStore attachment)."""
        record = self.record_for(checkpoint, file_digest(tmp_dir / RECORD_FILE))
        signature = sign(self.key, envelope(record, None)["digest"]) if self.key is not None else None
        (tmp_dir / LINEAGE_FILE).write_text(json.dumps(envelope(record, signature), indent=2, sort_keys=True))

    def record_for(self, checkpoint: dict[str, Any], round_record_digest: str) -> Record:
        reported: list[str] = list(checkpoint.get("reported", []))
        clients = [pseudonym(self.salt, c) for c in reported] if self.salt is not None else reported
        spec = self.spec
        return {
            "format": FORMAT,
            "training": self.training,
            "round": checkpoint["round"],
            "kind": "initial" if checkpoint["round"] == 0 else "train",
            "base_model": self.base_model(),
            "previous_model_digest": self._last_model_digest if checkpoint["round"] else None,
            "model_digest": checkpoint["model_digest"],
            "round_record_digest": round_record_digest,
            "clients": sorted(clients),
            "client_identity": "pseudonym" if self.salt is not None else "id",
            "selected": len(checkpoint.get("participants", [])),
            "site_count": len({site_of(c) for c in reported}),
            "strategy": _spec_block(spec.strategy),
            "secure_aggregation": _spec_block(spec.secure_aggregation),
            "privacy": _spec_block(getattr(spec, "privacy", None)),
            "privacy_release": checkpoint.get("privacy"),  # the noise this round's release added
            "epsilon": checkpoint.get("epsilon", (checkpoint.get("privacy") or {}).get("epsilon")),
            "fedfleet_version": __version__,
            "image_digest": os.environ.get("FEDFLEET_IMAGE_DIGEST") or None,
            "started": iso(checkpoint.get("started")),
            "finished": iso(checkpoint.get("finished")),
            "recorded": iso(datetime.datetime.now(datetime.UTC).timestamp()),
            "previous_record_digest": self.head or None,
        }

    def base_model(self) -> dict[str, Any]:
        if self._base is None:  # hashing a large source file once is enough
            model = self.spec.model
            self._base = {
                "task": self.spec.task.name,
                "source": model.source or None,
                "digest": base_model_digest(self.spec),
                "pinned": bool(model.digest),
                "seed": model.seed,
            }
        return self._base


def _salt(path: Path) -> bytes:
    """The training's pseudonym salt, made on first use and kept with the checkpoints (one
    aggregator per state dir, so no race; a torn write is replaced before any record used it)."""
    with contextlib.suppress(OSError, ValueError):
        salt = bytes.fromhex(path.read_text().strip())
        if len(salt) == 32:
            return salt
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return bytes.fromhex(path.read_text().strip())
