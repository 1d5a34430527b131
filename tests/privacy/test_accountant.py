"""Accountant: epsilon equals dp-accounting's own figure, the budget stop is exact, state survives JSON."""

from __future__ import annotations

import json

import pytest
from fedfleet.privacy import PrivacyAccountant, RoundCharge, effective_noise_multiplier

from tests.privacy.library import DELTA, library_epsilon


@pytest.mark.parametrize(("q", "z", "rounds"), [(0.05, 1.0, 12), (0.01, 0.8, 8), (1.0, 3.0, 20)])
def test_epsilon_matches_the_library_round_by_round(q: float, z: float, rounds: int) -> None:
    acc = PrivacyAccountant()
    assert acc.epsilon_spent(DELTA) == 0.0
    previous = 0.0
    for _ in range(rounds):
        acc.record_round(q, z)
        eps = acc.epsilon_spent(DELTA)
        assert eps > previous
        previous = eps
    assert acc.rounds == rounds and acc.ledger == (RoundCharge(q, z, rounds),)
    assert previous == pytest.approx(library_epsilon([(q, z)] * rounds), rel=1e-9)
    for delta in (1e-3, 1e-7):
        assert acc.epsilon_spent(delta) == pytest.approx(library_epsilon([(q, z)] * rounds, delta), rel=1e-9)


def test_rounds_with_dropouts_are_charged_their_effective_noise() -> None:
    q, z, n = 0.05, 1.2, 10
    survivors = [10, 10, 8, 10, 6, 6, 9]
    charged = [(q, effective_noise_multiplier(z, "distributed", n, s)) for s in survivors]
    acc = PrivacyAccountant()
    for q_, z_ in charged:
        acc.record_round(q_, z_)
    assert acc.epsilon_spent(DELTA) == pytest.approx(library_epsilon(charged), rel=1e-9)
    assert acc.epsilon_spent(DELTA) > library_epsilon([(q, z)] * len(survivors))  # dropouts cost
    assert [c.count for c in acc.ledger] == [2, 1, 1, 2, 1]  # consecutive equal rounds merged


def test_no_noise_means_no_guarantee() -> None:
    acc = PrivacyAccountant()
    assert acc.would_exceed(1e6, DELTA, 0.1, 0.0)
    acc.record_round(0.1, 0.0)
    assert acc.epsilon_spent(DELTA) == float("inf")


def test_budget_stop_refuses_exactly_the_round_that_would_exceed() -> None:
    q, z = 0.05, 1.0
    eps = {t: library_epsilon([(q, z)] * t) for t in (9, 10, 11)}
    budget = (eps[10] + eps[11]) / 2  # 10 rounds fit, 11 do not
    acc = PrivacyAccountant()
    spent = []
    while not acc.would_exceed(budget, DELTA, q, z):
        acc.record_round(q, z)
        spent.append(acc.epsilon_spent(DELTA))
        assert acc.rounds <= 10
    assert acc.rounds == 10  # round 10 was allowed, round 11 refused
    assert spent[-2] == pytest.approx(eps[9], rel=1e-9)
    assert spent[-1] == pytest.approx(eps[10], rel=1e-9) and spent[-1] <= budget
    refused = acc.epsilon_after(DELTA, q, z)
    assert refused == pytest.approx(eps[11], rel=1e-9) and refused > budget

    # a budget exactly at the next round's epsilon still admits it: only "above" is refused
    at = acc.epsilon_after(DELTA, q, z)
    assert not acc.would_exceed(at, DELTA, q, z)
    assert acc.would_exceed(at * (1 - 1e-9), DELTA, q, z)
    # checking never charges
    assert acc.rounds == 10 and acc.epsilon_spent(DELTA) == pytest.approx(eps[10], rel=1e-9)


def test_state_round_trips_through_json() -> None:
    acc = PrivacyAccountant()
    for q, z in [(0.05, 1.0), (0.05, 1.0), (0.05, 0.9), (0.02, 1.0), (0.05, 1.0)]:
        acc.record_round(q, z)
    text = acc.to_json()
    restored = PrivacyAccountant.from_json(text)
    assert restored.to_json() == text
    assert restored.ledger == acc.ledger and restored.rounds == 5
    assert json.loads(text)["rounds"][0] == {"samplingRate": 0.05, "noiseMultiplier": 1.0, "count": 2}
    assert restored.epsilon_spent(DELTA) == pytest.approx(acc.epsilon_spent(DELTA), rel=1e-12)
    acc.record_round(0.05, 1.1)
    restored.record_round(0.05, 1.1)
    assert restored.epsilon_spent(DELTA) == pytest.approx(acc.epsilon_spent(DELTA), rel=1e-12)
    assert PrivacyAccountant.from_json(PrivacyAccountant().to_json()).epsilon_spent(DELTA) == 0.0


def test_bad_inputs_are_refused() -> None:
    acc = PrivacyAccountant()
    for q, z in [(-0.1, 1.0), (1.5, 1.0), (0.1, -1.0), (0.1, float("nan"))]:
        with pytest.raises(ValueError):
            acc.record_round(q, z)
    for delta in (0.0, 1.0):
        with pytest.raises(ValueError, match="delta"):
            acc.epsilon_spent(delta)
    with pytest.raises(ValueError, match="budget"):
        acc.would_exceed(0.0, DELTA, 0.1, 1.0)
    with pytest.raises(ValueError, match="unsupported"):
        PrivacyAccountant.from_json('{"version": 99, "accounting": "rdp", "rounds": []}')
    with pytest.raises(ValueError, match="object"):
        PrivacyAccountant.from_json("[]")
    assert acc.rounds == 0
