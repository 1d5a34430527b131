"""The base model: loaded from a local file and checked against its pin, or built by the task.

Only the built-by-task path imports torch, so an aggregator serving a model file stays lean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.api.training import FederatedTrainingSpec

Weights = dict[str, np.ndarray]


class ModelSourceError(ValueError):
    """The base model cannot be used: missing, unreadable, or not the pinned digest."""


def initial_weights(spec: FederatedTrainingSpec) -> Weights:
    if not spec.model.source:
        from fedfleet.tasks.base import load_task, state_to_numpy

        return state_to_numpy(load_task(spec.task).build_model(spec.model.seed))
    path = Path(spec.model.source)
    if not path.is_file():
        raise ModelSourceError(f"spec.model.source: {path} is not a file (expected a .safetensors model)")
    actual = file_digest(path)
    if spec.model.digest and actual != spec.model.digest:
        raise ModelSourceError(
            f"spec.model.digest: {path} has digest {actual}, the manifest pins {spec.model.digest}"
        )
    try:
        return load_file(str(path))
    except Exception as err:
        raise ModelSourceError(
            f"spec.model.source: {path} is not a readable safetensors file: {err}"
        ) from None
