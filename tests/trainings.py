"""The FederatedTraining that unit tests of the controller and the round driver start from."""

from __future__ import annotations

from typing import Any

from fedfleet.api import parse_training
from fedfleet.api.training import FederatedTraining


def unit_training(spec: dict[str, Any]) -> FederatedTraining:
    """Training `t` in `default` on digits-mlp with plain sums; `spec` adds or replaces fields."""
    document = {"task": {"name": "digits-mlp"}, "secureAggregation": {"enabled": False}} | spec
    return parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "t", "namespace": "default"},
            "spec": document,
        }
    )
