"""The decision core under a privacy budget: train while the next round fits, then evaluate
and finish with PrivacyBudgetExhausted, from the released rounds' records alone."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant
from fedfleet.api import FederatedTrainingSpec, parse_training
from fedfleet.controller.core import BUDGET_EXHAUSTED, Finish, Observation, StartRound, decide
from fedfleet.privacy import NoiseMode, RoundPrivacy

from tests.privacy.library import library_epsilon

ALL = ("a-0", "b-0", "c-0", "d-0")
Z, DELTA = 1.2, 1e-5


def spec(budget: float, mode: NoiseMode = "central", min_clients: int = 4) -> FederatedTrainingSpec:
    return parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "t"},
            "spec": {
                "task": {"name": "digits-mlp"},
                "rounds": 10,
                "sites": {"names": ["a", "b", "c", "d"]},
                "minClients": min_clients,
                "privacy": {
                    "enabled": True,
                    "mode": mode,
                    "clipNorm": 1.0,
                    "noiseMultiplier": Z,
                    "delta": DELTA,
                    "epsilonBudget": budget,
                },
            },
        }
    ).spec


def released(k: int, mode: NoiseMode = "central", survivors: int = 4) -> tuple[RoundPrivacy, ...]:
    return tuple(RoundPrivacy(mode, 1.0, Z, 4, survivors) for _ in range(k))


def test_exactly_the_rounds_the_budget_allows_run() -> None:
    k = 3
    budget = (library_epsilon([(1.0, Z)] * k) + library_epsilon([(1.0, Z)] * (k + 1))) / 2
    s = spec(budget)
    for done in range(k):  # rounds 1..k fit
        obs = Observation(done, ALL, 4, released=released(done))
        assert decide(s, obs, 4) == StartRound(done + 1, "train", ALL, 600, 4)
    obs = Observation(k, ALL, 4, released=released(k))  # round k+1 would exceed: evaluate
    assert decide(s, obs, 4) == StartRound(k, "evaluate", ALL, 600, 4)
    final = decide(s, Observation(k, ALL, 4, evaluated=True, released=released(k)), 4)
    assert isinstance(final, Finish) and final.reason == BUDGET_EXHAUSTED
    assert f"stopped after {k} of 10 rounds" in final.message


def test_distributed_rounds_are_checked_at_min_clients_survivors_and_charged_as_carried() -> None:
    # One released round that lost a client: charged z sqrt(3/4), not z.
    dropped = released(1, "distributed", survivors=3)
    assert dropped[0].effective_noise_multiplier == Z * (3 / 4) ** 0.5
    one_lossy = library_epsilon([(1.0, Z * (3 / 4) ** 0.5)])
    # The next round is checked as if only minClients=3 of 4 survive.
    worst_two = RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(1.0, dp_accounting.GaussianDpEvent(Z * (3 / 4) ** 0.5))
    worst_two.compose(event, 2)
    two = float(worst_two.get_epsilon(DELTA))
    s_fits = spec(two * 1.001, "distributed", min_clients=3)
    s_stops = spec(two * 0.999, "distributed", min_clients=3)
    obs = Observation(1, ALL, 4, released=dropped)
    assert one_lossy < two
    assert decide(s_fits, obs, 4) == StartRound(2, "train", ALL, 600, 3)
    assert decide(s_stops, obs, 4) == StartRound(1, "evaluate", ALL, 600, 3)


def test_grouped_released_rounds_charge_exactly_what_the_rounds_one_by_one_do() -> None:
    """GetStatus sends the released records grouped with a count; the budget must not move."""
    from fedfleet.privacy.budget import check_budget, epsilon_spent
    from fedfleet.privacy.release import group_released

    rounds = [
        *[RoundPrivacy("distributed", 1.0, Z, 4, 4)] * 30,
        RoundPrivacy("distributed", 1.0, Z, 4, 3, 0.7),
        *[RoundPrivacy("distributed", 1.0, Z, 4, 4, 0.9)] * 20,
    ]
    groups = group_released(rounds)
    assert [(g.privacy.survivors, g.rounds, g.privacy.max_update_norm) for g in groups] == [
        (4, 50, 0.9),
        (3, 1, 0.7),
    ]
    s = spec(budget=50.0, mode="distributed")
    assert epsilon_spent(s.privacy, groups, 4) == epsilon_spent(s.privacy, rounds, 4)
    assert check_budget(s.privacy, groups, 4, 4, 4) == check_budget(s.privacy, rounds, 4, 4, 4)
    library = library_epsilon([(1.0, Z)] * 50 + [(1.0, Z * 0.75**0.5)])
    assert epsilon_spent(s.privacy, groups, 4) == pytest.approx(library, rel=1e-9)
