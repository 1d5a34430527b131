"""A task with no data and a model of exactly M parameters, for timing the round flow itself.

`bench/secagg.py --grpc` names it in a manifest (`synthetic_task:SyntheticUpdate`, with bench/
on PYTHONPATH), so the real client, aggregator and SecAgg+ stages run while training costs ~0.
"""

from __future__ import annotations

from typing import Any

import torch
from fedfleet.tasks.base import SiteContext, Task, TrainContext
from pydantic import BaseModel, Field


class SyntheticConfig(BaseModel):
    parameters: int = Field(default=1_000_000, ge=1)


class SyntheticUpdate(Task[SyntheticConfig]):
    """Training adds a small constant to every weight: a dense update of the full model size."""

    Config = SyntheticConfig

    def build_model(self, seed: int) -> torch.nn.Module:
        model = torch.nn.Module()
        model.weight = torch.nn.Parameter(torch.zeros(self.config.parameters))
        return model

    def load_data(self, site: SiteContext) -> Any:
        return None

    def train(self, model: torch.nn.Module, data: Any, ctx: TrainContext) -> tuple[int, dict[str, float]]:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1e-3)
        return 100, {"loss": 0.0}

    def evaluate(
        self, model: torch.nn.Module, data: Any, device: torch.device
    ) -> tuple[int, dict[str, float]]:
        return 1, {"loss": 0.0}
