"""Round checkpoints on disk, written so that a kill -9 at any instant leaves no half state.

Each completed round is a directory `rounds/round-NNNNNN/` holding the global model
(`model.safetensors`), the strategy's state and `round.json`. It is built under a temporary
name, every file fsynced, then renamed into place and the parent fsynced: a round directory
either exists whole or not at all. Round 0 is the initial model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

Weights = dict[str, np.ndarray]
MODEL_FILE = "model.safetensors"
STRATEGY_FILE = "strategy.safetensors"
RECORD_FILE = "round.json"
_PREFIX = "round-"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(target: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary sibling, fsynced, renamed, directory fsynced."""
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        with tmp.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
        _fsync_path(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Checkpoint:
    round: int
    path: Path
    record: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def load_weights(self) -> Weights:
        return load_file(str(self.model_path))

    def load_strategy_state(self) -> Weights:
        path = self.path / STRATEGY_FILE
        return load_file(str(path)) if path.exists() else {}


class CheckpointStore:
    def __init__(self, state_dir: Path) -> None:
        self.rounds_dir = state_dir / "rounds"
        self.evaluations_dir = state_dir / "evaluations"
        self.rounds_dir.mkdir(parents=True, exist_ok=True)
        self.evaluations_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.rounds_dir.glob(".tmp-*"):  # from a crash mid-write: never complete
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.evaluations_dir.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)

    def _dir(self, round_number: int) -> Path:
        return self.rounds_dir / f"{_PREFIX}{round_number:06d}"

    def completed(self) -> list[Checkpoint]:
        found = []
        for path in sorted(self.rounds_dir.glob(f"{_PREFIX}*")):
            number = int(path.name.removeprefix(_PREFIX))
            found.append(Checkpoint(number, path, json.loads((path / RECORD_FILE).read_text())))
        return found

    def latest(self) -> Checkpoint | None:
        done = self.completed()
        return done[-1] if done else None

    def save(
        self,
        round_number: int,
        weights: Weights,
        strategy_state: Weights,
        record: dict[str, Any],
        attachments: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> Checkpoint:
        """Write a round atomically; fills record["model_digest"]. Refuses to overwrite a round.

        `attachments(tmp_dir, record)` may add files (a lineage record, say) that must appear
        together with the checkpoint they describe: they are written before the rename.
        """
        final = self._dir(round_number)
        if final.exists():
            raise FileExistsError(f"round {round_number} is already checkpointed at {final}")
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.rounds_dir))
        try:
            save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp / MODEL_FILE))
            if strategy_state:
                save_file(strategy_state, str(tmp / STRATEGY_FILE))
            record = {**record, "round": round_number, "model_digest": file_digest(tmp / MODEL_FILE)}
            (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
            if attachments is not None:
                attachments(tmp, record)
            for path in tmp.iterdir():
                _fsync_path(path)
            _fsync_path(tmp)
            tmp.rename(final)
            _fsync_path(self.rounds_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Checkpoint(round_number, final, record)

    def save_evaluation(self, model_version: int, record: dict[str, Any]) -> Path:
        """Model `model_version`'s evaluation, written like a checkpoint: whole or absent."""
        target = self.evaluations_dir / f"version-{model_version:06d}.json"
        write_durably(target, json.dumps(record, indent=2, sort_keys=True))
        return target
