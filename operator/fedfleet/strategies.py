"""Aggregation strategies: how the round's weighted-mean update becomes the next global model.

Pure numpy, so they test in milliseconds. Adding a strategy is one class in this file with
`@register`; the manifest schema and the CRD enum pick the name up from the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from fedfleet.api.training import StrategySpec

Weights = dict[str, np.ndarray]
BLOCK = 1 << 18  # elements per step of an in-place update: temporaries stay cache-sized

_REGISTRY: dict[str, type[Strategy]] = {}


@dataclass(frozen=True)
class StrategyTerms:
    """The strategy's part of a client's local training (sent with every round)."""

    proximal_mu: float = 0.0  # FedProx: (mu/2)||w - w_global||^2 joins the local loss


def register(cls: type[Strategy]) -> type[Strategy]:
    _REGISTRY[cls.name] = cls
    return cls


class Strategy(ABC):
    """Server side of a federated optimiser. State (if any) is checkpointed with the model."""

    name: ClassVar[str]

    def __init__(self, spec: StrategySpec) -> None:
        self.spec = spec

    def client_terms(self) -> StrategyTerms:
        """Settings every client needs for its local training in this round."""
        return StrategyTerms()

    @abstractmethod
    def apply(self, global_weights: Weights, mean_delta: Weights) -> None:
        """Update `global_weights` in place from the example-weighted mean of client deltas."""

    def state(self) -> Weights:
        return {}

    def load_state(self, state: Weights) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, but the checkpoint has {sorted(state)}")


@register
class FedAvg(Strategy):
    """McMahan et al. 2017: step towards the example-weighted mean of client models."""

    name = "FedAvg"

    def apply(self, global_weights: Weights, mean_delta: Weights) -> None:
        """In blocks: `delta * lr` of a whole tensor would be a model-sized temporary in fresh pages."""
        lr = self.spec.server_learning_rate
        for key, delta in mean_delta.items():
            target = global_weights[key]
            if target.shape != delta.shape or not (target.flags.c_contiguous and delta.flags.c_contiguous):
                target += (delta * lr).astype(target.dtype, copy=False)
                continue
            flat, step = target.reshape(-1), delta.reshape(-1)
            for begin in range(0, len(flat), BLOCK):
                block = flat[begin : begin + BLOCK]
                block += (step[begin : begin + BLOCK] * lr).astype(block.dtype, copy=False)


@register
class FedProx(FedAvg):
    """Li et al. 2020: FedAvg on the server; clients add (mu/2)||w - w_global||^2 to their loss."""

    name = "FedProx"

    def client_terms(self) -> StrategyTerms:
        return StrategyTerms(proximal_mu=self.spec.proximal_mu)


@register
class FedAdam(Strategy):
    """Reddi et al. 2021: the mean delta is a pseudo-gradient for an Adam step on the server."""

    name = "FedAdam"

    def __init__(self, spec: StrategySpec) -> None:
        super().__init__(spec)
        self._m: Weights = {}
        self._v: Weights = {}

    def apply(self, global_weights: Weights, mean_delta: Weights) -> None:
        b1, b2, tau, lr = self.spec.beta1, self.spec.beta2, self.spec.tau, self.spec.server_learning_rate
        for key, delta in mean_delta.items():
            m = self._m.setdefault(key, np.zeros_like(delta, dtype=np.float32))
            v = self._v.setdefault(key, np.zeros_like(delta, dtype=np.float32))
            m *= b1
            m += (1 - b1) * delta
            v *= b2
            v += (1 - b2) * np.square(delta)
            step = lr * m / (np.sqrt(v) + tau)
            global_weights[key] += step.astype(global_weights[key].dtype, copy=False)

    def state(self) -> Weights:
        return {f"m.{k}": v for k, v in self._m.items()} | {f"v.{k}": v for k, v in self._v.items()}

    def load_state(self, state: Weights) -> None:
        self._m = {k[2:]: v.copy() for k, v in state.items() if k.startswith("m.")}
        self._v = {k[2:]: v.copy() for k, v in state.items() if k.startswith("v.")}


STRATEGY_NAMES: list[str] = sorted(_REGISTRY)


def make_strategy(spec: StrategySpec) -> Strategy:
    return _REGISTRY[spec.name](spec)
