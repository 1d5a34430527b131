"""Which base model a training starts from, as a digest both the ledger and a site can check.

The pin (`spec.model.digest`) is authoritative wherever a base model is loaded or built: the
aggregator refuses a source file, or an initial model the task builds from its seed, that
does not match it (`fedfleet.models`), and a task that loads its base itself checks it there.
Without a pin, a source file's own digest is the base; a model the task builds from its seed
has no base digest at all.
"""

from __future__ import annotations

from pathlib import Path

from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.api.training import FederatedTrainingSpec


def base_model_digest(spec: FederatedTrainingSpec) -> str | None:
    if spec.model.digest:
        return spec.model.digest
    source = Path(spec.model.source)
    if spec.model.source and source.is_file():
        return file_digest(source)
    return None
