"""`fedfleet plan`: the DP forecast is dp-accounting's figure for the rounds the controller would
run, and the bytes per round are what the real encoders put on the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fedfleet.api import parse_training
from fedfleet.cli import main
from fedfleet.compression import encode_update
from fedfleet.models import initial_weights
from fedfleet.plan.checks import preflight
from fedfleet.privacy.noise import effective_noise_multiplier

from tests.privacy.library import library_epsilon

PARAMETERS = 64 * 64 + 64 + 10 * 64 + 10  # digits-mlp with hidden 64


def training(**spec: Any) -> Any:
    base = {"task": {"name": "digits-mlp"}, "rounds": 6, "sites": {"names": ["a", "b", "c", "d"]}}
    return parse_training(
        {"apiVersion": "fedfleet.io/v1alpha1", "kind": "FederatedTraining", "metadata": {"name": "t"}}
        | {"spec": base | spec}
    )


def test_forecast_is_dp_accountings_epsilon_and_the_budget_allows_what_the_controller_runs() -> None:
    privacy = {"enabled": True, "clipNorm": 1.0, "noiseMultiplier": 1.1, "epsilonBudget": 8}
    plan = preflight(training(privacy=privacy), "m.yaml", with_traffic=False)
    assert plan.privacy is not None
    expected = [library_epsilon([(1.0, 1.1)] * n) for n in range(1, 7)]
    assert plan.privacy.epsilons == pytest.approx(expected, rel=1e-9)
    allowed = sum(e <= 8 for e in expected)
    assert plan.privacy.allowed_rounds == allowed == 2  # 6.33 after two rounds, 8.04 after three
    assert plan.ok and "allows 2 of 6 rounds" in plan.warnings[0]


def test_distributed_forecast_charges_the_noise_of_min_clients_survivors() -> None:
    privacy = {"enabled": True, "mode": "distributed", "clipNorm": 1.0, "noiseMultiplier": 1.0}
    secure = {"enabled": True, "clipRange": 8.0}
    plan = preflight(
        training(privacy=privacy, minClients=3, secureAggregation=secure), "m.yaml", with_traffic=False
    )
    assert plan.privacy is not None
    z = effective_noise_multiplier(1.0, "distributed", 4, 3)
    assert z < 1.0 and plan.privacy.noise_multiplier == z
    assert plan.privacy.epsilons[-1] == pytest.approx(library_epsilon([(1.0, z)] * 6), rel=1e-9)


def test_a_budget_that_allows_no_round_is_an_error() -> None:
    privacy = {"enabled": True, "clipNorm": 1.0, "noiseMultiplier": 1.1, "epsilonBudget": 0.05}
    plan = preflight(training(privacy=privacy), "m.yaml", with_traffic=False)
    assert not plan.ok and plan.privacy is not None and plan.privacy.allowed_rounds == 0
    assert plan.errors[0].startswith("spec.privacy.epsilonBudget: 0.05 allows no round")


@pytest.mark.parametrize("bits", [32, 16, 8, 4])
def test_plaintext_upload_bytes_are_the_encoders_bytes(bits: int) -> None:
    t = training(compression={"bits": bits, "blockSize": 256}, secureAggregation={"enabled": False})
    plan = preflight(t, "m.yaml")
    assert plan.traffic is not None and plan.traffic.values == PARAMETERS
    update = {k: np.asarray(v, dtype=np.float32) for k, v in initial_weights(t.spec).items()}
    wire = sum(len(c.data) + len(c.scales) for c in encode_update(update, bits, 256))
    assert plan.traffic.upload_bytes == wire
    assert plan.traffic.round_bytes == 4 * (wire + 4 * PARAMETERS)


def test_secure_upload_bytes_are_the_masked_lane_words() -> None:
    # the bytes tests/compression/test_local_run.py sees accepted: 8 bits, 3 clients -> uint16 lanes
    secure = {"enabled": True, "maxWeight": 1000, "clipRange": 2.0}
    t = training(compression={"bits": 8}, sites={"names": ["a", "b", "c"]}, secureAggregation=secure)
    plan = preflight(t, "m.yaml")
    assert plan.traffic is not None and plan.traffic.upload_bytes == 2 * (PARAMETERS + 1)
    assert plan.traffic.encoding == "SecAgg+ uint16 lanes"


def test_plan_command_prints_the_forecast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    spec = {"task": {"name": "digits-mlp"}, "rounds": 3, "sites": {"names": ["a", "b", "c", "d"]}}
    spec["privacy"] = {"enabled": True, "clipNorm": 1.0, "noiseMultiplier": 1.1, "epsilonBudget": 8}
    doc = {"apiVersion": "fedfleet.io/v1alpha1", "kind": "FederatedTraining", "metadata": {"name": "t"}}
    path.write_text(yaml.safe_dump(doc | {"spec": spec}))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"plan for default/t ({path}): OK" in out
    assert "2 of 3 rounds allowed" in out and "epsilon after round: 1: 4.24, 2: 6.327, 3: 8.039" in out
    assert "bytes per round: 150.3 KiB (153936 B) for 4 clients" in out
