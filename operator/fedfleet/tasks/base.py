"""The task protocol and how a manifest's task name becomes a task object."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from fedfleet.api.load import format_validation_error
from fedfleet.api.training import ModelSpec, TaskSpec

BUILTIN_TASKS = {
    "digits-mlp": "fedfleet.tasks.digits:DigitsMLPTask",
    "causal-lm-lora": "fedfleet.tasks.causal_lm:CausalLMLoRATask",
}

Weights = dict[str, np.ndarray]
ConfigT = TypeVar("ConfigT", bound=BaseModel)


class TaskError(ValueError):
    """A task that cannot be loaded or configured; the message names the manifest field."""


@dataclass(frozen=True)
class SiteContext:
    """Who this client is: its site, its data partition and where its data volume is mounted."""

    site: str
    client_id: str
    partition: int
    num_partitions: int
    seed: int
    data_dir: Path | None = None


@dataclass
class TrainContext:
    """One round's training settings, from the aggregator's join reply."""

    round: int
    seed: int
    device: torch.device
    proximal_mu: float = 0.0
    global_weights: dict[str, torch.Tensor] = field(default_factory=dict)


class Task(ABC, Generic[ConfigT]):
    """A federated learning task. `Config` is a pydantic model of `spec.task.config`.

    The federated weights (what the aggregator averages and checkpoints, what clients download
    and upload) are by default every floating-point entry of the model's state dict; a task
    that trains only part of its model (an adapter) overrides `federated_weights` and
    `load_federated_weights`, and `initial_weights` if building the whole model is too costly
    for the aggregator.
    """

    Config: ClassVar[type[BaseModel]]
    #: True: `spec.model.source` is a base model the task loads itself (a directory or hub id),
    #: not the initial global model file the aggregator would otherwise read.
    loads_base_model: ClassVar[bool] = False
    #: `spec.model`, set by `load_task`.
    model_spec: ModelSpec = ModelSpec()

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abstractmethod
    def build_model(self, seed: int) -> torch.nn.Module:
        """The model with deterministic initial weights for `seed`."""

    @abstractmethod
    def load_data(self, site: SiteContext) -> Any:
        """This site's train and held-out data; the object is passed back to train/evaluate."""

    @abstractmethod
    def train(self, model: torch.nn.Module, data: Any, ctx: TrainContext) -> tuple[int, dict[str, float]]:
        """Train in place; return (examples used, metrics such as loss)."""

    @abstractmethod
    def evaluate(
        self, model: torch.nn.Module, data: Any, device: torch.device
    ) -> tuple[int, dict[str, float]]:
        """Evaluate on the held-out split; return (examples, metrics such as loss and accuracy)."""

    def federated_weights(self, model: torch.nn.Module) -> Weights:
        """The weights that travel and are averaged; the aggregator checkpoints exactly these.
        The caller only reads them: they may share the model's memory (no copy per round)."""
        return state_to_numpy(model)

    def load_federated_weights(self, model: torch.nn.Module, weights: Weights) -> None:
        """Put global federated weights into the model; refuses weights of another shape of model."""
        numpy_to_state(model, weights)

    def release_files(self) -> dict[str, bytes]:
        """Files a released model needs beside its weights (a LoRA adapter's adapter_config.json)."""
        return {}

    def initial_weights(self, seed: int) -> Weights:
        """The aggregator's round-0 global weights, deterministic for `seed`."""
        return self.federated_weights(self.build_model(seed))


def load_task(spec: TaskSpec, model: ModelSpec | None = None) -> Task[Any]:
    """Import the task class and validate its config; errors name `spec.task.*`."""
    target = BUILTIN_TASKS.get(spec.name, spec.name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise TaskError(
            f"spec.task.name: {spec.name!r} is neither a built-in task ({', '.join(BUILTIN_TASKS)}) "
            "nor of the form package.module:Class"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise TaskError(f"spec.task.name: cannot load {target!r}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError(f"spec.task.name: {target!r} is not a fedfleet.tasks.Task subclass")
    try:
        config = cls.Config.model_validate(spec.config)
    except ValidationError as err:
        raise TaskError(
            format_validation_error(err, "spec.task.config", cls.Config).replace(
                "spec.task.config: ", "spec.task.config."
            )
        ) from None
    task = cls(config)
    if model is not None:
        task.model_spec = model
    return task


def state_to_numpy(model: torch.nn.Module) -> Weights:
    """The federated weights: every floating-point entry of the state dict, as numpy arrays
    (views of the model's CPU tensors: a copy would land in fresh pages every round).

    Integer buffers (such as BatchNorm's step counters) stay local to the client.
    """
    return {
        name: tensor.detach().to("cpu").numpy()
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
    }


def numpy_to_state(model: torch.nn.Module, weights: Weights) -> None:
    own = {name for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    if own != set(weights):
        missing, extra = sorted(own - set(weights)), sorted(set(weights) - own)
        raise TaskError(f"global model does not fit the task's model: missing {missing}, unexpected {extra}")
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, strict=False
    )
