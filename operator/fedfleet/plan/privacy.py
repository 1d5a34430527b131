"""The DP forecast: epsilon after each planned round, and how many rounds the budget allows.

Charged as the controller charges a round before running it (`privacy.budget.next_round_charge`:
the whole cohort, and in distributed mode only minClients survivors), so the forecast is the
worst case the controller itself will stop at.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedfleet.api.training import FederatedTrainingSpec

MAX_LISTED_ROUNDS = 1000  # epsilon is listed for at most this many rounds; the allowance is exact


@dataclass(frozen=True)
class PrivacyForecast:
    epsilons: list[float]  # after round 1, 2, ... (at most MAX_LISTED_ROUNDS)
    allowed_rounds: int  # rounds the epsilonBudget lets run (spec.rounds when there is no budget)
    budget: float | None
    sampling_rate: float
    noise_multiplier: float  # the z a round is charged with (effective, in distributed mode)

    def errors(self, rounds: int) -> list[str]:
        if self.budget is None or self.allowed_rounds > 0:
            return []
        first = self.epsilons[0] if self.epsilons else float("inf")
        return [
            f"spec.privacy.epsilonBudget: {self.budget:g} allows no round: one round at "
            f"noiseMultiplier {self.noise_multiplier:g} and sampling rate {self.sampling_rate:g} "
            f"already costs epsilon {first:.4g}; raise the budget or noiseMultiplier"
        ]

    def warnings(self, rounds: int) -> list[str]:
        if self.budget is None or not 0 < self.allowed_rounds < rounds:
            return []
        return [
            f"spec.privacy.epsilonBudget: {self.budget:g} allows {self.allowed_rounds} of "
            f"{rounds} rounds; the training stops there (PrivacyBudgetExhausted)"
        ]


def forecast(spec: FederatedTrainingSpec, population: int) -> PrivacyForecast | None:
    """None when the training is not private."""
    privacy = spec.privacy
    if not privacy.enabled:
        return None
    from fedfleet.privacy.accountant import PrivacyAccountant, RoundCharge  # dp-accounting
    from fedfleet.privacy.budget import next_round_charge

    cohort = max(1, population)
    charge = next_round_charge(privacy, cohort, min(spec.min_clients, cohort), population)

    def epsilon_after(rounds: int) -> float:
        ledger = [RoundCharge(charge.sampling_rate, charge.noise_multiplier, rounds)]
        return PrivacyAccountant(ledger).epsilon_spent(privacy.delta)

    listed = [epsilon_after(n) for n in range(1, min(spec.rounds, MAX_LISTED_ROUNDS) + 1)]
    allowed = spec.rounds
    if privacy.epsilon_budget is not None:
        budget = privacy.epsilon_budget
        low, high = 0, spec.rounds  # epsilon grows with rounds: the last count within budget
        while low < high:
            middle = (low + high + 1) // 2
            within = (
                listed[middle - 1] <= budget if middle <= len(listed) else epsilon_after(middle) <= budget
            )
            low, high = (middle, high) if within else (low, middle - 1)
        allowed = low
    return PrivacyForecast(
        listed, allowed, privacy.epsilon_budget, charge.sampling_rate, charge.noise_multiplier
    )
