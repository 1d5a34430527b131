"""A short `fedfleet local run` with 8-bit compression and SecAgg+: 16-bit masked lanes on the
wire, and the model still trains."""

from __future__ import annotations

import json
from pathlib import Path

from tests.dataplane.harness import write_manifest
from tests.local.test_local_run import finish, local_run

PARAMETERS = 64 * 64 + 64 + 10 * 64 + 10  # digits-mlp with hidden 64


def test_an_8_bit_secure_run_trains_and_uploads_16_bit_lanes(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "m.yaml",
        name="q8",
        rounds=3,
        minClients=3,
        task={"name": "digits-mlp", "config": {"alpha": 1.0, "localEpochs": 3}},
        compression={"bits": 8},
        # near the real example counts and update values: the SecAgg+ code spans [-c, c] x w/maxWeight
        secureAggregation={"enabled": True, "maxWeight": 1000, "clipRange": 2.0},
    )
    finish(local_run(manifest, tmp_path / "out"))
    rounds = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    accuracies = [r["eval_accuracy"] for r in rounds]
    assert all(r["clients"] == "3/3" for r in rounds)
    assert accuracies[-1] > 0.7 and accuracies[-1] > accuracies[0], accuracies  # chance is 0.1
    log = (tmp_path / "out" / "logs" / "aggregator.log").read_text().splitlines()
    accepted = [json.loads(line) for line in log if '"update.accepted"' in line]
    assert len(accepted) == 9
    # 3 clients, 8 bits + ceil(log2 3) headroom -> uint16 lanes: M update words + 1 weight word
    assert {a["bytes"] for a in accepted} == {2 * (PARAMETERS + 1)}
