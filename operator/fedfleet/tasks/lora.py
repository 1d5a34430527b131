"""LoRA adapters with PEFT: wrapping a base model, naming the adapter tensors, initialising them.

The federated weights of a LoRA task are the adapter's trainable tensors only, under the names
PEFT's own `adapter_model.safetensors` uses (the adapter name dropped), so a checkpoint loads
with `PeftModel.from_pretrained` next to an `adapter_config.json`.

Initial adapter values are drawn here rather than by PEFT: they then depend only on the seed
and the tensors' names and shapes, so the aggregator can draw them from a model built on the
meta device (no base weights read), and every client draws the same.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import numpy as np
import torch

from fedfleet.tasks.base import TaskError, Weights

ADAPTER = "default"


def wrap(model: torch.nn.Module, rank: int, alpha: int, dropout: float, targets: list[str] | str) -> Any:
    """The PEFT model: base weights frozen, LoRA on `targets` (module names or "all-linear")."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in 5.x
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(model, config, adapter_name=ADAPTER)
    except ValueError as err:  # PEFT names the target modules it could not find
        raise TaskError(f"spec.task.config.targetModules: {err}") from None


def adapter_config(
    rank: int, alpha: int, dropout: float, targets: list[str] | str, base: str
) -> dict[str, Any]:
    """PEFT's adapter_config.json for the adapter `wrap` trains: with it, a checkpoint's
    model.safetensors loads with `PeftModel.from_pretrained`."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    config.base_model_name_or_path = base
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by their PEFT adapter-file names (`...lora_A.weight`)."""
    marker = f".{ADAPTER}."
    return {
        name.replace(marker, "."): param for name, param in model.named_parameters() if param.requires_grad
    }


def initial_adapter(shapes: dict[str, tuple[int, ...]], seed: int) -> Weights:
    """LoRA's usual start: B (and an embedding's A) zero, the other factor uniform in
    ±1/sqrt(fan_in) (what kaiming_uniform(a=sqrt(5)) gives), so the adapter starts as a no-op."""
    weights = {}
    for name, shape in sorted(shapes.items()):
        if ".lora_B." in name or ".lora_embedding_A." in name:
            weights[name] = np.zeros(shape, dtype=np.float32)
            continue
        stream = int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")
        bound = 1.0 / math.sqrt(max(1, math.prod(shape[1:])))
        weights[name] = np.random.default_rng(stream).uniform(-bound, bound, shape).astype(np.float32)
    return weights


def read_adapter(model: torch.nn.Module) -> Weights:
    return {
        name: param.detach().to("cpu", torch.float32).numpy().copy()
        for name, param in adapter_parameters(model).items()
    }


@torch.no_grad()
def write_adapter(model: torch.nn.Module, weights: Weights) -> None:
    """Copy global adapter weights in; refuses an adapter of another shape (rank, targets)."""
    own = adapter_parameters(model)
    if set(own) != set(weights):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise TaskError(f"global adapter does not fit this LoRA model: missing {missing}, unexpected {extra}")
    for name, param in own.items():
        if tuple(param.shape) != weights[name].shape:
            raise TaskError(
                f"global adapter tensor {name} has shape {weights[name].shape}, the model's is "
                f"{tuple(param.shape)}"
            )
        param.copy_(torch.from_numpy(np.ascontiguousarray(weights[name])))
