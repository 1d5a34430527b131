"""A real aggregator process, driven over gRPC, leaves a lineage chain behind for the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fedfleet.provenance.signing import generate_signing_key
from fedfleet.v1 import aggregator_pb2 as pb

from tests.dataplane.harness import Aggregator, chunks_of, write_manifest

CLIENTS = ["site-a-0", "site-b-0", "site-c-0"]
ROUNDS = 3


@dataclass(frozen=True)
class Chain:
    state: Path
    key: Path
    log: Path
    status: pb.AggregatorStatus


def run_rounds(agg: Aggregator, rounds: int) -> None:
    """Each round: every client joins, downloads, uploads a small update; the round succeeds."""
    for number in range(1, rounds + 1):
        agg.start_round(number, CLIENTS, min_clients=len(CLIENTS))
        for i, client in enumerate(CLIENTS):
            assert agg.join(client).action == pb.JoinReply.ACTION_TRAIN
            model = agg.download(client, number)
            update = {k: np.full_like(v, 0.01 * (i + 1)) for k, v in model.items()}
            agg.upload(client, number, chunks_of(update, 1 << 16), examples=10 * (i + 1))
        final = list(agg.control.WatchRound(pb.WatchRequest(round=number)))[-1]
        assert final.phase == pb.ROUND_PHASE_SUCCEEDED, final.reason


def make_chain(root: Path, signed: bool = True, rounds: int = ROUNDS, **spec: Any) -> Chain:
    root.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(
        root / "manifest.yaml", rounds=rounds, secureAggregation={"enabled": False}, **spec
    )
    key = root / "lineage.pem"
    args: tuple[str, ...] = ("--insecure-local",)
    if signed:
        generate_signing_key(key)
        args += ("--lineage-key", str(key))
    agg = Aggregator(manifest, root / "state", root / "aggregator.log", args=args)
    try:
        run_rounds(agg, rounds)
        status = agg.status()
    finally:
        agg.close()
    return Chain(root / "state", key, root / "aggregator.log", status)
