"""FederatedRound: one round of a training, owned by it. The operator writes spec and status."""

from __future__ import annotations

from pydantic import Field

from fedfleet.api.base import SpecModel


class FederatedRoundSpec(SpecModel):
    training: str = Field(min_length=1, description="The FederatedTraining this round belongs to.")
    round: int = Field(ge=0, description="Round number; the final evaluation round repeats the last number.")
    kind: str = Field(default="train", json_schema_extra={"enum": ["train", "evaluate"]})
    participants: list[str] = Field(default_factory=list, description="Client ids selected for the round.")
    min_clients: int = Field(default=1, ge=1)
    deadline: str = Field(default="", description="RFC 3339 time the round closes at the latest.")
    attempt: int = Field(default=1, ge=1, description="Try of this round (failed rounds are retried).")
