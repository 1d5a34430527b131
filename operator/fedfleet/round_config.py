"""What a client is told about one round besides the model: the training seed, the strategy's
terms for local training and, in a masked round, the SecAgg+ parameters. Typed end to end (the
wire form is `fedfleet.v1.RoundConfig`, see `convert`), and checked by the client before it
acts on them: the aggregator on the other side may be wrong or lying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedfleet.secagg import ProtocolError, SecAggParams
from fedfleet.strategies import StrategyTerms


class InvalidRoundConfig(ProtocolError):
    """A round's settings a client must not act on: it abandons the round and says why."""


@dataclass(frozen=True)
class SecAggSettings:
    """A masked round's SecAgg+ parameters and attempt, as the aggregator built them."""

    participants: int
    neighbours: int
    threshold: int
    clip: float
    max_weight: float
    lane_bits: int
    attempt: int

    def __post_init__(self) -> None:
        try:
            self.params()
        except ValueError as err:
            raise InvalidRoundConfig(f"secure_aggregation: {err}") from None
        if self.attempt < 1:
            raise InvalidRoundConfig("secure_aggregation.attempt must be positive")

    @classmethod
    def of(cls, params: SecAggParams, attempt: int) -> SecAggSettings:
        return cls(
            params.participants,
            params.neighbours,
            params.threshold,
            params.clip,
            params.max_weight,
            params.lane_bits,
            attempt,
        )

    def params(self) -> SecAggParams:
        """The parameters both sides build (ValueError when they are inconsistent)."""
        return SecAggParams(
            self.participants,
            self.neighbours,
            self.threshold,
            self.clip,
            self.max_weight,
            lane=self.lane_bits,
        )


@dataclass(frozen=True)
class RoundConfig:
    seed: int = 0  # spec.model.seed: with the round and the client id, the training seed
    strategy: StrategyTerms = field(default_factory=StrategyTerms)
    secure_aggregation: SecAggSettings | None = None  # set: the round is masked

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise InvalidRoundConfig(f"seed must be >= 0, got {self.seed}")
        mu = self.strategy.proximal_mu
        if not (math.isfinite(mu) and mu >= 0):
            raise InvalidRoundConfig(f"strategy.proximal_mu must be finite and >= 0, got {mu}")
