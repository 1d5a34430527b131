"""A local run's output folder remembers the spec it was made with, so that a re-run into the
same `--out` resumes the same training or is refused: never the old checkpoints continued
under a new strategy, model shape or privacy setting.

`OUT/spec.json` holds the spec (camelCase, defaults filled) and its digest. It is written
before the first process starts, and only then, so a folder with checkpoints but no record
(made before this guard) is refused too: nothing can say what made it. `spec.rounds` is left
out of the digest: raising it continues the same training for more rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfleet.api.training import FederatedTraining

RECORD_FILE = "spec.json"


class StateMismatch(ValueError):
    """The folder holds another training's checkpoints; the message says what differs."""


@dataclass(frozen=True)
class Resume:
    completed_rounds: int  # 0: a fresh start
    total_rounds: int

    def message(self) -> str:
        if self.completed_rounds >= self.total_rounds:
            return f"resuming after the last of {self.total_rounds} rounds: evaluating the final model"
        return f"resuming at round {self.completed_rounds + 1} of {self.total_rounds}"


def spec_document(training: FederatedTraining) -> dict[str, Any]:
    return {
        "name": training.metadata.name,
        "namespace": training.metadata.namespace,
        "spec": training.spec.model_dump(mode="json", by_alias=True, exclude={"rounds"}),
    }


def spec_digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def completed_rounds(out_dir: Path) -> int:
    rounds = out_dir / "state" / "rounds"
    numbers = (
        [int(p.name.removeprefix("round-")) for p in rounds.glob("round-[0-9]*")] if rounds.is_dir() else []
    )
    return max(numbers, default=0)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ (the first level that differs, not every leaf below it)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [prefix] if old != new else []
    found: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}.{key}" if prefix else key
        if key not in old or key not in new:
            found.append(path)
        else:
            found += _differences(old[key], new[key], path)
    return found


def check_state(out_dir: Path, training: FederatedTraining, force: bool = False) -> Resume:
    """Where the run in `out_dir` stands for this training; StateMismatch when it belongs to
    another spec (unless `force`). Records the spec for the next run."""
    document = spec_document(training)
    digest = spec_digest(document)
    done = completed_rounds(out_dir)
    record_path = out_dir / RECORD_FILE
    if done and not force:
        if not record_path.exists():
            raise StateMismatch(
                f"{out_dir} holds {done} rounds of a run that recorded no spec; "
                "use another --out, or --force to continue it under this manifest"
            )
        recorded = json.loads(record_path.read_text())
        if recorded.get("digest") != digest:
            changed = ", ".join(_differences(recorded.get("document", {}), document)[:8]) or "the spec"
            raise StateMismatch(
                f"{out_dir} holds {done} rounds of a run made with another spec "
                f"({recorded.get('digest')}, this manifest is {digest}); changed: {changed}; "
                "use another --out, or --force to continue those checkpoints under this manifest"
            )
    record_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"digest": digest, "document": document}, indent=2, sort_keys=True))
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(record_path)
    return Resume(done, training.spec.rounds)
