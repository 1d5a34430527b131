"""The decision core: one next step from spec and observation, the same after any restart."""

from __future__ import annotations

from typing import Any

import pytest
from fedfleet.api import parse_training
from fedfleet.api.training import RetrySpec
from fedfleet.controller.core import (
    SCHEDULING_GRACE_SECONDS,
    FailTraining,
    Finish,
    Observation,
    RoundView,
    StartRound,
    WaitForClients,
    WatchRound,
    decide,
    restart_delay,
)

pytestmark = pytest.mark.unit

SPEC = parse_training(
    {
        "apiVersion": "fedfleet.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": "t"},
        "spec": {
            "task": {"name": "digits-mlp"},
            "rounds": 2,
            "sites": {"names": ["a", "b", "c"]},
            "minClients": 2,
            "roundTimeoutSeconds": 30,
            "retry": {"maxRoundAttempts": 2},
        },
    }
).spec
PLAIN = SPEC.model_copy(
    update={"secure_aggregation": SPEC.secure_aggregation.model_copy(update={"enabled": False})}
)
ALL = ("a-0", "b-0", "c-0")


def obs(**changes: Any) -> Observation:
    return Observation(**({"model_version": 0, "ready_clients": ALL, "live_clients": 3} | changes))


def test_starts_the_next_round_with_every_ready_client() -> None:
    assert decide(SPEC, obs(), 3) == StartRound(1, "train", ALL, 30, 2)
    assert decide(SPEC, obs(model_version=1), 3) == StartRound(2, "train", ALL, 30, 2)


def test_waits_for_clients_then_starts_with_enough_after_the_grace_period() -> None:
    assert isinstance(decide(SPEC, obs(ready_clients=("a-0", "b-0")), 3), WaitForClients)
    late = obs(ready_clients=("a-0", "b-0"), waiting_seconds=SCHEDULING_GRACE_SECONDS)
    assert decide(PLAIN, late, 3) == StartRound(1, "train", ("a-0", "b-0"), 30, 2)
    assert isinstance(decide(SPEC, late, 3), WaitForClients), "SecAgg+ needs three"
    assert isinstance(decide(SPEC, obs(ready_clients=("a-0",), waiting_seconds=999), 3), WaitForClients)


def test_watches_an_open_round_instead_of_starting_another() -> None:
    assert decide(SPEC, obs(current=RoundView(1, "train", "Training")), 3) == WatchRound(1)


def test_evaluates_the_final_model_then_finishes() -> None:
    assert decide(SPEC, obs(model_version=2), 3) == StartRound(2, "evaluate", ALL, 30, 2)
    assert decide(SPEC, obs(model_version=2, evaluated=True), 3) == Finish()


def test_fails_after_too_many_round_failures_or_too_few_clients() -> None:
    failed = decide(SPEC, obs(round_failures={1: 2}, last_failure="deadline passed"), 3)
    assert failed == FailTraining("round 1 failed 2 times; last: deadline passed")
    assert decide(SPEC, obs(round_failures={1: 1}), 3) == StartRound(1, "train", ALL, 30, 2)
    assert decide(PLAIN, obs(live_clients=1), 3) == FailTraining("1 clients left, fewer than minClients 2")
    assert decide(SPEC, obs(live_clients=2), 3) == FailTraining(
        "2 clients left, fewer than the 3 secure aggregation needs"
    )
    assert decide(SPEC, obs(live_clients=2, model_version=2), 3) == StartRound(2, "evaluate", ALL, 30, 2)


def test_restart_backoff_doubles_and_stops_at_max_attempts() -> None:
    retry = RetrySpec(max_attempts=3, backoff_seconds=2)
    assert [restart_delay(retry, n) for n in (1, 2, 3)] == [2, 4, None]


def test_clients_given_up_on_are_not_waited_for() -> None:
    two_left = obs(ready_clients=("a-0", "b-0"), live_clients=2)
    assert decide(PLAIN, two_left, 3) == StartRound(1, "train", ("a-0", "b-0"), 30, 2)


def test_rounds_grown_after_the_final_evaluation_are_trained_not_finished() -> None:
    """spec.rounds grew while the final evaluation ran: that evaluation was of an earlier model."""
    grown = SPEC.model_copy(update={"rounds": 4})
    action = decide(grown, obs(model_version=2, evaluated=True), 3)
    assert action == StartRound(3, "train", ALL, 30, 2)
    assert decide(grown, obs(model_version=4, evaluated=True), 3) == Finish()
