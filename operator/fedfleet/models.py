"""The base model: built by the task from a seed, or loaded from a local file and checked against its pin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.api.training import ModelSpec
from fedfleet.tasks.base import Task, state_to_numpy

Weights = dict[str, np.ndarray]


class ModelSourceError(ValueError):
    """The base model cannot be used: missing, unreadable, or not the pinned digest."""


def initial_weights(task: Task[Any], model: ModelSpec) -> Weights:
    if not model.source:
        return state_to_numpy(task.build_model(model.seed))
    path = Path(model.source)
    if not path.is_file():
        raise ModelSourceError(f"spec.model.source: {path} is not a file (expected a .safetensors model)")
    actual = file_digest(path)
    if model.digest and actual != model.digest:
        raise ModelSourceError(
            f"spec.model.digest: {path} has digest {actual}, the manifest pins {model.digest}"
        )
    try:
        return load_file(str(path))
    except Exception as err:
        raise ModelSourceError(
            f"spec.model.source: {path} is not a readable safetensors file: {err}"
        ) from None
