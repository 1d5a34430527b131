"""The initial global model: a local file checked against its pin, or built by the task.

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
    """Round 0's global weights: a `.safetensors` file named by `spec.model.source`, or the task's.

    The task builds them when there is no source, or when the source is a base model the task
    loads itself (`Task.loads_base_model`: a LoRA task's source is the model it adapts, and its
    federated weights are the adapter).
    """
    path = Path(spec.model.source)
    if not spec.model.source or not path.is_file():
        from fedfleet.tasks.base import load_task

        task = load_task(spec.task, spec.model)
        if not spec.model.source or task.loads_base_model:
            return task.initial_weights(spec.model.seed)
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
