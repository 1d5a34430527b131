"""Each round's metrics belong to the model that round produced, the same on a cluster and in a
local run: round.json of round 1 says model version 1, FederatedRound rN's eval_* equal the local
run's round N, and the training's status ends with the final model's evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedfleet.api import parse_training
from fedfleet.plan.checks import preflight

from tests.controller.cluster import site, training_manifest, wait_for
from tests.controller.test_operator_e2e import SITES, Fleet
from tests.dataplane.harness import free_port

# float32 FedAvg without masking: seeded client training makes both runs compute the same models
SPEC: dict[str, Any] = {"minClients": 3, "secureAggregation": {"enabled": False}}
TOLERANCE = 1e-4  # float sums in another arrival order


@pytest.mark.timeout(600)  # two whole trainings, one local and one on the test cluster
def test_round_metrics_belong_to_the_produced_model_on_a_cluster_and_locally(
    kubeconfig: Path, tmp_path: Path
) -> None:
    manifest = training_manifest("digits", free_port(), SITES, **SPEC)
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "local"
    local = subprocess.run(
        [sys.executable, "-m", "fedfleet", "local", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ | {"FEDFLEET_LOG_FORMAT": "json"},
    )
    assert local.returncode == 0, local.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    rows = {r["round"]: r for r in report["rounds"]}
    evaluations = out / "state" / "evaluations"
    for number in (1, 2, 3):
        record = json.loads((out / "state" / "rounds" / f"round-{number:06d}" / "round.json").read_text())
        assert record["model_version"] == number and record["base_version"] == number - 1
        measured = json.loads((evaluations / f"version-{number:06d}.json").read_text())
        assert measured["model_digest"] == record["model_digest"] == rows[number]["model_digest"]
        assert rows[number]["eval_accuracy"] == measured["metrics"]["eval_accuracy"]
    assert report["final"]["eval_accuracy"] == rows[3]["eval_accuracy"]
    assert rows[1]["eval_accuracy"] > 0.15  # the initial model's chance level (~0.1) is not round 1's
    # bytes per round: what `fedfleet plan` forecasts, float32 updates from 3 clients
    plan = preflight(parse_training(manifest), path)
    assert plan.traffic is not None
    assert {r["bytes"] for r in rows.values()} == {3 * plan.traffic.upload_bytes}

    (tmp_path / "cluster").mkdir()
    fleet = Fleet(kubeconfig, tmp_path / "cluster")
    try:
        for name in SITES:
            fleet.cluster.apply(site(name))
        fleet.cluster.apply(manifest)
        done = fleet.wait_phase("digits", "Succeeded")

        def rounds() -> dict[str, Any]:
            items = fleet.cluster.items("FederatedRound", "default")
            return {r["metadata"]["name"]: r["status"] for r in items}

        # the last round's eval arrives with the final evaluation: wait for the copy to land
        wait_for(lambda: "eval_accuracy" in rounds()["digits-r0003"].get("metrics", {}), 30, "r3 eval")
        shown = rounds()
        for number in (1, 2, 3):
            status = shown[f"digits-r{number:04d}"]
            assert status["metrics"]["eval_accuracy"] == pytest.approx(
                rows[number]["eval_accuracy"], abs=TOLERANCE
            ), (number, status["metrics"], rows[number])
            assert status["bytesReceived"] == rows[number]["bytes"]
        final = shown["digits-eval"]["metrics"]["eval_accuracy"]
        assert done["status"]["metrics"]["eval_accuracy"] == final
        assert final == pytest.approx(report["final"]["eval_accuracy"], abs=TOLERANCE)
    finally:
        fleet.close()
