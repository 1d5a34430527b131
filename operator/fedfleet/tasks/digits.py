"""Built-in `digits-mlp`: scikit-learn's bundled 8x8 digits, split across sites with label skew.

The data ships inside scikit-learn, so a federation trains with nothing downloaded. Each site
gets a Dirichlet(alpha) share of every class (small alpha: strongly non-IID) and keeps a
held-out test split of its own share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from fedfleet.tasks.base import SiteContext, Task, TrainContext
from fedfleet.tasks.training import evaluate_classifier, train_epochs

NUM_CLASSES = 10
NUM_FEATURES = 64


class DigitsConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    alpha: float = Field(default=0.5, gt=0, description="Dirichlet concentration of the label skew.")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Held-out share of each site's data.")
    hidden: int = Field(default=64, ge=1, le=4096)
    local_epochs: int = Field(default=2, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    partition_seed: int = Field(default=42, ge=0, description="Seed of the split; equal across sites.")


@dataclass(frozen=True)
class SiteData:
    train: TensorDataset
    test: TensorDataset


def dirichlet_partition(labels: np.ndarray, num_partitions: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Indices per partition: each class is spread over partitions by Dirichlet(alpha) proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


class DigitsMLPTask(Task[DigitsConfig]):
    Config = DigitsConfig

    def build_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(NUM_FEATURES, self.config.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.config.hidden, NUM_CLASSES),
        )

    def load_data(self, site: SiteContext) -> SiteData:
        digits = load_digits()
        features = (digits.data / 16.0).astype(np.float32)
        labels = digits.target.astype(np.int64)
        parts = dirichlet_partition(
            labels, site.num_partitions, self.config.alpha, self.config.partition_seed
        )
        mine = np.random.default_rng(self.config.partition_seed + 1 + site.partition).permutation(
            parts[site.partition]
        )
        n_test = max(1, round(len(mine) * self.config.test_fraction))
        test, train = mine[:n_test], mine[n_test:]
        as_set = lambda idx: TensorDataset(torch.from_numpy(features[idx]), torch.from_numpy(labels[idx]))  # noqa: E731
        return SiteData(train=as_set(train), test=as_set(test))

    def train(
        self, model: torch.nn.Module, data: SiteData, ctx: TrainContext
    ) -> tuple[int, dict[str, float]]:
        loss = train_epochs(
            model,
            data.train,
            ctx,
            epochs=self.config.local_epochs,
            batch_size=self.config.batch_size,
            learning_rate=self.config.learning_rate,
            loss_fn=torch.nn.functional.cross_entropy,
        )
        return len(data.train), {"loss": loss}

    def evaluate(
        self, model: torch.nn.Module, data: SiteData, device: torch.device
    ) -> tuple[int, dict[str, float]]:
        return evaluate_classifier(model, data.test, device, torch.nn.functional.cross_entropy)
