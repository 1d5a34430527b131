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
from fedfleet.api.training import TaskSpec

BUILTIN_TASKS = {
    "digits-mlp": "fedfleet.tasks.digits:DigitsMLPTask",
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
    """A federated learning task. `Config` is a pydantic model of `spec.task.config`."""

    Config: ClassVar[type[BaseModel]]

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


def load_task(spec: TaskSpec) -> Task[Any]:
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
            format_validation_error(err, "spec.task.config").replace(
                "spec.task.config: ", "spec.task.config."
            )
        ) from None
    return cls(config)


def state_to_numpy(model: torch.nn.Module) -> Weights:
    """The federated weights: every floating-point entry of the state dict, as numpy arrays.

    Integer buffers (such as BatchNorm's step counters) stay local to the client.
    """
    return {
        name: tensor.detach().to("cpu").numpy().copy()
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
    }


def numpy_to_state(model: torch.nn.Module, weights: Weights) -> None:
    own = state_to_numpy(model)
    if set(own) != set(weights):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise TaskError(f"global model does not fit the task's model: missing {missing}, unexpected {extra}")
    model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, strict=False
    )
