"""Bytes a round moves with the manifest's compression and SecAgg+ settings, from the model's
real tensor sizes: what a team budgets its links with before the first round."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.compression import data_bytes

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Traffic:
    values: int  # federated values in the model (what is averaged)
    upload_bytes: int  # one client's update payload (chunk data and scales; no framing)
    download_bytes: int  # one client's copy of the global model (float32)
    clients: int  # clients per round
    encoding: str  # e.g. "float32", "q8 blocks of 1024", "SecAgg+ uint16 lanes"

    @property
    def round_bytes(self) -> int:
        return self.clients * (self.upload_bytes + self.download_bytes)

    @property
    def ratio(self) -> float:
        """Upload bytes against plain float32: 0.25 is 4x fewer bytes."""
        return self.upload_bytes / max(1, FLOAT32_BYTES * self.values)


def upload_bytes(spec: FederatedTrainingSpec, sizes: Mapping[str, int], clients: int) -> tuple[int, str]:
    """One client's update payload, as the aggregator counts it (`update.accepted` bytes)."""
    values = sum(sizes.values())
    bits, block = spec.compression.bits, spec.compression.block_size
    if spec.secure_aggregation.enabled:
        from fedfleet.secagg.params import SecAggParams, lane_for

        secure = spec.secure_aggregation
        params = SecAggParams.build(
            max(3, clients),
            secure.neighbours,
            secure.threshold_ratio,
            secure.clip_range,
            secure.max_weight,
            lane=lane_for(0 if bits >= 32 else bits, max(3, clients)),
        )
        words = values + params.weight_words
        return words * params.lane_bits // 8, f"SecAgg+ uint{params.lane_bits} lanes"
    if bits == 32:
        return FLOAT32_BYTES * values, "float32"
    scales = sum(math.ceil(n / block) for n in sizes.values()) * FLOAT32_BYTES
    return sum(data_bytes(bits, n) for n in sizes.values()) + scales, f"q{bits} in blocks of {block}"


def traffic(spec: FederatedTrainingSpec, weights: Mapping[str, np.ndarray], clients: int) -> Traffic:
    sizes = {name: int(np.asarray(w).size) for name, w in weights.items()}
    upload, encoding = upload_bytes(spec, sizes, clients)
    values = sum(sizes.values())
    return Traffic(values, upload, FLOAT32_BYTES * values, clients, encoding)
