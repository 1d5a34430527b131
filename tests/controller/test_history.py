"""spec.history: which finished FederatedRounds are pruned by count and by age (the operator run
with a count limit is in test_model_release.py)."""

from __future__ import annotations

import datetime
from typing import Any

from fedfleet.api.retention import HistorySpec
from fedfleet.controller.history import rounds_to_prune

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def record(number: int, phase: str, minutes_ago: float, kind: str = "train") -> dict[str, Any]:
    finished = NOW - datetime.timedelta(minutes=minutes_ago)
    name = "t-eval" if kind == "evaluate" else f"t-r{number:04d}"
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-12-03T00:00:00Z"},
        "spec": {"round": number, "kind": kind},
        "status": {"phase": phase, "completionTime": finished.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


ROUNDS = [
    record(3, "Succeeded", 5),
    record(1, "Succeeded", 50),
    record(2, "Failed", 20),
    record(4, "Training", 0),  # still running: never pruned
    record(4, "Succeeded", 90, kind="evaluate"),  # the final model's record: never pruned
]


def test_the_newest_rounds_are_kept_by_count() -> None:
    assert rounds_to_prune(ROUNDS, HistorySpec(maxRounds=1), NOW.timestamp()) == ["t-r0001", "t-r0002"]
    assert rounds_to_prune(ROUNDS, HistorySpec(maxRounds=3), NOW.timestamp()) == []
    assert rounds_to_prune(ROUNDS, HistorySpec(), NOW.timestamp()) == []


def test_rounds_finished_longer_ago_than_the_age_limit_go() -> None:
    assert rounds_to_prune(ROUNDS, HistorySpec(maxAgeSeconds=30 * 60), NOW.timestamp()) == ["t-r0001"]
    # the newest finished round stays whatever its age: the aggregator may still report it as current
    assert rounds_to_prune(ROUNDS, HistorySpec(maxAgeSeconds=60), NOW.timestamp()) == ["t-r0001", "t-r0002"]
    both = HistorySpec(maxRounds=2, maxAgeSeconds=10 * 60)
    assert rounds_to_prune(ROUNDS, both, NOW.timestamp()) == ["t-r0001", "t-r0002"]
