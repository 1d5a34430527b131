"""DP in a real aggregator process: the released mean carries the configured noise, clipping is
enforced on plaintext uploads, and round.json records what each round carried."""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
from fedfleet.v1 import aggregator_pb2 as pb
from safetensors.numpy import load_file

from tests.dataplane.harness import Aggregator, chunks_of, running_aggregator

Z, C = 2.0, 0.5
CLIENTS = ["a", "b", "c"]
PRIVATE = {
    "task": {"name": "digits-mlp", "config": {"hidden": 128, "localEpochs": 1}},
    "secureAggregation": {"enabled": False},
    "privacy": {"enabled": True, "mode": "central", "clipNorm": C, "noiseMultiplier": Z},
}


def _finished(agg: Aggregator, number: int) -> pb.RoundState:
    *_, last = agg.control.WatchRound(pb.WatchRequest(round=number), timeout=60)
    assert last.phase == pb.ROUND_PHASE_SUCCEEDED, last.reason
    return last


def _model(state: Path, number: int) -> dict[str, np.ndarray]:
    return load_file(state / "rounds" / f"round-{number:06d}" / "model.safetensors")


def test_the_released_mean_carries_noise_of_std_z_c_over_the_cohort(tmp_path: Path) -> None:
    """Zero updates from 3 clients: the new model minus the old one is exactly the noise / 3."""
    with running_aggregator(tmp_path, **PRIVATE) as agg:
        agg.start_round(1, CLIENTS, min_clients=3)
        for cid in CLIENTS:
            agg.join(cid)
            zero = {k: np.zeros_like(v) for k, v in agg.download(cid, 1).items()}
            agg.upload(cid, 1, chunks_of(zero, 1 << 16), examples=100 * (1 + CLIENTS.index(cid)))
        _finished(agg, 1)
        record = json.loads((tmp_path / "state" / "rounds" / "round-000001" / "round.json").read_text())
    before, after = _model(tmp_path / "state", 0), _model(tmp_path / "state", 1)
    noise = np.concatenate([(after[k] - before[k]).ravel().astype(np.float64) for k in before])
    expected = Z * C / len(CLIENTS)  # central noise z C on the sum, divided by the cohort of 3
    # The sample std of P normals has a relative standard error of 1/sqrt(2P): allow 5 of them.
    tolerance = 5 / math.sqrt(2 * noise.size)
    assert noise.size > 9000
    assert abs(noise.std() / expected - 1) < tolerance, (noise.std(), expected, tolerance)
    assert abs(noise.mean()) < 5 * expected / math.sqrt(noise.size)  # centred: no bias, no weights
    assert record["privacy"] == {
        "mode": "central",
        "clipNorm": C,
        "noiseMultiplier": Z,
        "effectiveNoiseMultiplier": Z,
        "expectedClients": 3,
        "survivors": 3,
        "maxUpdateNorm": 0.0,
    }


def test_a_plaintext_update_beyond_clip_norm_is_refused_and_norms_are_recorded(tmp_path: Path) -> None:
    with running_aggregator(tmp_path, **PRIVATE) as agg:
        agg.start_round(1, CLIENTS, min_clients=2)
        agg.join("a")
        weights = agg.download("a", 1)
        names = sorted(weights)
        big = {k: np.zeros_like(v) for k, v in weights.items()}
        big[names[0]].flat[0] = C * 1.001
        with pytest.raises(grpc.RpcError) as refused:
            agg.upload("a", 1, chunks_of(big, 1 << 16))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "exceeds spec.privacy.clipNorm 0.5" in (refused.value.details() or "")
        within = {k: np.zeros_like(v) for k, v in weights.items()}
        within[names[0]].flat[0], within[names[-1]].flat[-1] = 0.29, 0.4  # joint norm 0.494
        agg.upload("a", 1, chunks_of(within, 1 << 16))
        agg.join("b")
        agg.upload("b", 1, chunks_of({k: np.zeros_like(v) for k, v in weights.items()}, 1 << 16))
        agg.control.DropClient(pb.DropRequest(round=1, client_id="c", reason="test"))
        _finished(agg, 1)
        status = agg.status()
        history = [h for h in status.recent if h.round == 1]
        released = status.released
    assert [(g.privacy.survivors, g.rounds) for g in released] == [(2, 1)]  # what the accountant charges
    assert history and history[0].privacy.survivors == 2 and history[0].privacy.expected_clients == 3
    assert history[0].privacy.max_update_norm == pytest.approx(math.hypot(0.29, 0.4), rel=1e-6)
    assert history[0].privacy.max_update_norm <= C
