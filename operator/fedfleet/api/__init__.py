"""What a user writes: the FederatedTraining manifest, validated with errors that name the field."""

from fedfleet.api.load import ManifestError, load_training, parse_training
from fedfleet.api.training import (
    FederatedTraining,
    FederatedTrainingSpec,
    RetrySpec,
    StrategySpec,
    TaskSpec,
)

__all__ = [
    "FederatedTraining",
    "FederatedTrainingSpec",
    "ManifestError",
    "RetrySpec",
    "StrategySpec",
    "TaskSpec",
    "load_training",
    "parse_training",
]
