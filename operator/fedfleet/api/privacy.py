"""`spec.privacy`: client-level differential privacy (DP-FedAvg) settings of a training.

The CRD schema is generated from this model, so ranges and descriptions live on the fields.
It lives in `fedfleet.api` (pydantic only) so that reading a manifest never imports the
accountant; `fedfleet.privacy` re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedfleet.api.base import SpecModel


class PrivacySpec(SpecModel):
    """Client-level DP (DP-FedAvg): clip updates to clipNorm, noise the sum by noiseMultiplier x clipNorm."""

    enabled: bool = Field(default=False, description="Clip and noise client updates, and account epsilon.")
    mode: Literal["central", "distributed"] = Field(
        default="central",
        description=(
            "Who adds the noise. central: the aggregator, to the unmasked sum (it sees the sum "
            "noiseless). distributed: each client adds its share before secure aggregation "
            "masking (needs secureAggregation; dropouts lower the noise and are charged)."
        ),
    )
    clip_norm: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="L2 bound on each client's whole update (all tensors jointly). Required when enabled.",
    )
    noise_multiplier: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Noise std on the sum, in units of clipNorm. 0 clips without noise: no privacy "
            "guarantee (infinite epsilon). Required when enabled."
        ),
    )
    delta: float = Field(
        default=1e-5,
        gt=0,
        lt=1,
        description="The delta of (epsilon, delta)-DP; keep it well below 1 / number of clients.",
    )
    epsilon_budget: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Stop the training (PrivacyBudgetExhausted) before a round that would take the "
            "client-level epsilon at delta above this. Unset: account and report, never stop."
        ),
    )

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> PrivacySpec:
        if not self.enabled:
            return self
        missing = [
            alias
            for alias, value in (("clipNorm", self.clip_norm), ("noiseMultiplier", self.noise_multiplier))
            if value is None
        ]
        if missing:
            raise ValueError(f"privacy is enabled: set {' and '.join(missing)}")
        if self.epsilon_budget is not None and self.noise_multiplier == 0:
            raise ValueError("noiseMultiplier 0 gives infinite epsilon: no round fits in epsilonBudget")
        return self
