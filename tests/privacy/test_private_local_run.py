"""`fedfleet local run` with DP, real processes: every upload clipped, epsilon as dp-accounting
computes it for the run's q and z, and the budget stopping the training exactly in time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.dataplane.harness import write_manifest
from tests.local.test_local_run import finish, local_run
from tests.privacy.library import library_epsilon

C, Z, DELTA = 1.0, 1.5, 1e-5
TASK = {"name": "digits-mlp", "config": {"hidden": 16, "localEpochs": 2}}


def run(tmp_path: Path, name: str, privacy: dict[str, Any], **spec: Any) -> dict[str, Any]:
    manifest = write_manifest(
        tmp_path / f"{name}.yaml",
        name=name,
        task=TASK,
        minClients=3,
        privacy={"enabled": True, "clipNorm": C, "noiseMultiplier": Z, "delta": DELTA} | privacy,
        **spec,
    )
    output = finish(local_run(manifest, tmp_path / name), timeout=120)
    metrics: dict[str, Any] = json.loads((tmp_path / name / "metrics.json").read_text())
    metrics["output"] = output
    return metrics


def clipped_norms(logs: Path) -> list[float]:
    norms = []
    for log in logs.glob("site-*.log"):
        for line in log.read_text().splitlines():
            if '"update.clipped"' in line:
                event = json.loads(line)
                norms.append(event["norm"] * event["scale"])
                assert event["scale"] == 1.0 or event["norm"] > C
    return norms


def test_the_budget_stops_the_training_after_exactly_the_rounds_it_allows(tmp_path: Path) -> None:
    """Budget between epsilon(2 rounds) and epsilon(3): 2 rounds run, the 3rd would exceed it."""
    two, three = library_epsilon([(1.0, Z)] * 2), library_epsilon([(1.0, Z)] * 3)
    budget = (two + three) / 2
    metrics = run(
        tmp_path,
        "budget",
        {"mode": "central", "epsilonBudget": budget},
        rounds=5,
        secureAggregation={"enabled": False},
    )
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2], "stops before round 3, not before 2 nor after 3"
    assert metrics["final"]["stop_reason"] == "PrivacyBudgetExhausted"
    assert "stopped after 2 of 5 rounds" in metrics["final"]["stop_message"]
    # q = 3 participants / 3 clients; the status figure is dp-accounting's for (q, z, rounds)
    assert [r["epsilon"] for r in rounds] == [library_epsilon([(1.0, Z)]), two]
    assert metrics["final"]["epsilon"] == two <= budget
    assert metrics["final"]["eval_accuracy"] is not None, "the stopped model is still evaluated"
    assert "PrivacyBudgetExhausted" in metrics["output"]
    norms = clipped_norms(tmp_path / "budget" / "logs")
    assert len(norms) == 3 * 2 and max(norms) <= C
    for r in rounds:  # the aggregator measured every plaintext update it accepted
        assert 0 < r["privacy"]["maxUpdateNorm"] <= C
        assert r["privacy"]["survivors"] == r["privacy"]["expectedClients"] == 3


def test_distributed_noise_under_secure_aggregation_is_charged_as_configured(tmp_path: Path) -> None:
    metrics = run(tmp_path, "distributed", {"mode": "distributed"}, rounds=2)
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and metrics["final"]["stop_reason"] == ""
    assert [r["privacy"]["effectiveNoiseMultiplier"] for r in rounds] == [Z, Z]  # no dropouts
    assert [r["privacy"]["maxUpdateNorm"] for r in rounds] == [-1.0, -1.0]  # masked: unseen
    assert [r["epsilon"] for r in rounds] == [library_epsilon([(1.0, Z)]), library_epsilon([(1.0, Z)] * 2)]
    norms = clipped_norms(tmp_path / "distributed" / "logs")
    assert len(norms) == 3 * 2 and max(norms) <= C
