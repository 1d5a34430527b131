"""The initial global model: a local file checked against its pin, or built by the task.

Only the built-by-task path imports torch, so an aggregator serving a model file stays lean.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from fedfleet.aggregator.checkpoints import file_digest, read_model
from fedfleet.api.training import FederatedTrainingSpec

Weights = dict[str, np.ndarray]


class ModelSourceError(ValueError):
    """The base model cannot be used: missing, unreadable, or not the pinned digest."""


def initial_weights(spec: FederatedTrainingSpec) -> Weights:
    """Round 0's global weights: a `.safetensors` file named by `spec.model.source`, or the task's.

    The task builds them when there is no source, or when the source is a base model the task
    loads itself (`Task.loads_base_model`: a LoRA task's source is the model it adapts, and its
    federated weights are the adapter). A pin holds in every case: a file's digest, the base
    the task loads, or the digest of the model the task built (round 0's `model.safetensors`).
    """
    path = Path(spec.model.source)
    if not spec.model.source or not path.is_file():
        from fedfleet.tasks.base import load_task

        task = load_task(spec.task, spec.model)
        if task.loads_base_model:  # the task checks the pin against the base it loads
            return task.initial_weights(spec.model.seed)
        if not spec.model.source:
            return _pinned(task.initial_weights(spec.model.seed), spec)
        raise ModelSourceError(f"spec.model.source: {path} is not a file (expected a .safetensors model)")
    actual = file_digest(path)
    if spec.model.digest and actual != spec.model.digest:
        raise ModelSourceError(
            f"spec.model.digest: {path} has digest {actual}, the manifest pins {spec.model.digest}"
        )
    try:
        return read_model(path)  # tensor by tensor: the model once in memory, not twice
    except Exception as err:
        raise ModelSourceError(
            f"spec.model.source: {path} is not a readable safetensors file: {err}"
        ) from None


def weights_digest(weights: Weights) -> str:
    """sha256 of `weights` as a checkpoint's model.safetensors holds them (no metadata, so the
    same tensors always give the same bytes)."""
    data = save({k: np.ascontiguousarray(v) for k, v in weights.items()})
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _pinned(weights: Weights, spec: FederatedTrainingSpec) -> Weights:
    """A task-built initial model must be the pinned one too: same task, config, seed and
    library versions give the same digest; anything else is refused before round 0 exists."""
    if spec.model.digest and (actual := weights_digest(weights)) != spec.model.digest:
        raise ModelSourceError(
            f"spec.model.digest: the initial model {spec.task.name} builds from spec.model.seed "
            f"{spec.model.seed} has digest {actual}, the manifest pins {spec.model.digest} (pin the "
            "digest of round 0's model.safetensors, or remove the pin)"
        )
    return weights
