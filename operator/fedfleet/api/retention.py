"""`spec.retention` and `spec.history`: what outlives a training, and how many FederatedRound
records a long training keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedfleet.api.base import SpecModel

Policy = Literal["Retain", "Delete"]


class RetentionSpec(SpecModel):
    """Read when the training is deleted; editable until the training finishes."""

    state_volume: Policy = Field(
        default="Retain",
        description="The aggregator's state PersistentVolumeClaim (every checkpoint and the lineage) "
        "when the training is deleted.",
    )
    lineage_key: Policy = Field(
        default="Retain",
        description="The lineage signing key Secret when the training is deleted (it signs the "
        "released model's attestation; the release carries the public half).",
    )


class HistorySpec(SpecModel):
    """FederatedRound objects kept; older ones are deleted (the checkpoints keep every round)."""

    max_rounds: int | None = Field(
        default=None, ge=1, le=100_000, description="Newest training rounds kept; unset: all."
    )
    max_age_seconds: int | None = Field(
        default=None,
        ge=60,
        le=366 * 24 * 3600,
        description="Finished rounds older than this are deleted; unset: no age limit.",
    )
