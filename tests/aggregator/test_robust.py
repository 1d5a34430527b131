"""Robust aggregation for plaintext federations: one wildly wrong client barely moves the
coordinate-wise median or trimmed mean, where it would take over the weighted mean; and the
manifest refuses it with SecAgg+ or DP, which release only a sum."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from fedfleet.aggregator.engine import RoundEngine
from fedfleet.aggregator.means import robust_into
from fedfleet.aggregator.rounds import Kind, Phase
from fedfleet.api import parse_training

from tests.aggregator.test_engine import SHAPES, ManualClock, engine_for, update, upload

FIVE = ["a", "b", "c", "d", "e"]


async def a_round_of_five(engine: RoundEngine, scales: list[float]) -> None:
    engine.start_round(1, Kind.TRAIN, FIVE, 60.0, min_clients=5)
    for client in FIVE:
        assert (await engine.join("unit", client, client, 0)).action == "train"
    for client, scale in zip(FIVE, scales, strict=True):
        await upload(engine, client, update(scale), examples=10 if client != "e" else 1_000_000)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if engine.current is not None and engine.current.phase == Phase.SUCCEEDED:
            return
    raise AssertionError(engine.current.reason if engine.current else "no round")


@pytest.mark.parametrize(("aggregation", "expected"), [("median", 2.0), ("trimmedMean", 7 / 3)])
async def test_one_poisoned_client_barely_moves_a_robust_aggregate(
    tmp_path: Path, aggregation: str, expected: float
) -> None:
    strategy = {"aggregation": aggregation, "trimFraction": 0.2}
    engine = engine_for(tmp_path, ManualClock(), sites={"names": FIVE}, strategy=strategy)
    await a_round_of_five(engine, [1.0, 2.0, 3.0, 2.0, 1e6])  # e claims a million examples too
    latest = engine.store.latest()
    assert latest is not None
    for name, value in latest.load_weights().items():  # 0.5 + median(1, 2, 3, 2, 1e6), or mean(2, 2, 3)
        np.testing.assert_allclose(value, np.full(SHAPES[name], 0.5 + expected), rtol=1e-6)


def test_robust_into_works_block_by_block_and_trims_each_end() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.normal(size=200_000).astype(np.float32) for _ in range(7)]
    out = np.empty(200_000, np.float32)
    robust_into(out, updates, "median", 0.0)
    np.testing.assert_allclose(out, np.median(np.stack(updates), axis=0))
    robust_into(out, updates, "trimmedMean", 0.3)  # 2 cut at each end of 7
    np.testing.assert_allclose(out, np.sort(np.stack(updates), axis=0)[2:5].mean(axis=0), rtol=1e-6)


def test_robust_aggregation_is_refused_with_secure_aggregation_or_privacy() -> None:
    def errors(**spec: object) -> list[str]:
        base = {"task": {"name": "digits-mlp"}, "rounds": 1, "sites": {"names": ["a", "b", "c"]}}
        document = {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "t"},
        }
        return parse_training(document | {"spec": base | spec}).spec.semantic_errors()

    assert any("releases only their sum" in e for e in errors(strategy={"aggregation": "median"}))
    private = {"enabled": True, "clipNorm": 1.0, "noiseMultiplier": 1.0, "mode": "central"}
    plain = {"enabled": False}
    assert any(
        "does not combine with spec.privacy" in e
        for e in errors(strategy={"aggregation": "trimmedMean"}, secureAggregation=plain, privacy=private)
    )
    assert errors(strategy={"aggregation": "median"}, secureAggregation=plain) == []
