"""Strategies: the server update each one promises, and FedAdam's state surviving a checkpoint."""

from __future__ import annotations

import numpy as np
from fedfleet.api.training import StrategySpec
from fedfleet.strategies import STRATEGY_NAMES, make_strategy


def weights() -> dict[str, np.ndarray]:
    return {"w": np.array([1.0, -2.0, 3.0], dtype=np.float32), "b": np.array([0.5], dtype=np.float32)}


def test_registry_lists_every_strategy() -> None:
    assert STRATEGY_NAMES == ["FedAdam", "FedAvg", "FedProx"]


def test_fedavg_steps_by_the_mean_delta_times_server_lr() -> None:
    model, delta = weights(), {"w": np.array([0.1, 0.2, -0.3], np.float32), "b": np.array([1.0], np.float32)}
    make_strategy(StrategySpec(name="FedAvg", server_learning_rate=0.5)).apply(model, delta)
    np.testing.assert_allclose(model["w"], [1.05, -1.9, 2.85], rtol=1e-6)
    np.testing.assert_allclose(model["b"], [1.0], rtol=1e-6)


def test_fedprox_tells_clients_mu() -> None:
    assert make_strategy(StrategySpec(name="FedProx", proximal_mu=0.3)).client_terms().proximal_mu == 0.3
    assert make_strategy(StrategySpec(name="FedAvg")).client_terms().proximal_mu == 0.0


def test_fedadam_matches_the_adam_update_and_its_state_round_trips() -> None:
    spec = StrategySpec(name="FedAdam", server_learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    delta = {"w": np.array([0.2, -0.4, 0.0], np.float32), "b": np.array([1.0], np.float32)}
    first, model = make_strategy(spec), weights()
    first.apply(model, delta)
    m = 0.1 * delta["w"]
    v = 0.01 * delta["w"] ** 2
    np.testing.assert_allclose(model["w"], weights()["w"] + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-5)

    resumed = make_strategy(spec)
    resumed.load_state(first.state())
    a, b = {k: v.copy() for k, v in model.items()}, {k: v.copy() for k, v in model.items()}
    first.apply(a, delta)
    resumed.apply(b, delta)
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name])
