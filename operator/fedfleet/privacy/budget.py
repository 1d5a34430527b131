"""Epsilon of a training from its released rounds, and whether the next round fits the budget.

Pure functions of the rounds' records (`RoundPrivacy`, kept in the aggregator's checkpoints)
and the client population, so the controller recomputes the same figures after any restart
and never charges a round twice: a round is charged because its record exists, exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from fedfleet.api.privacy import PrivacySpec
from fedfleet.privacy.accountant import PrivacyAccountant, RoundCharge
from fedfleet.privacy.noise import effective_noise_multiplier
from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy

Released = Sequence[RoundPrivacy | ReleasedRounds]  # one entry per round, or counted groups


@lru_cache(maxsize=64)
def _accountant(charges: tuple[RoundCharge, ...]) -> PrivacyAccountant:
    return PrivacyAccountant(charges)  # shared: only read (epsilon_after works on a copy)


def charges(released: Released, population: int) -> tuple[RoundCharge, ...]:
    return tuple(r.charge(population) for r in released)


def epsilon_spent(spec: PrivacySpec, released: Released, population: int) -> float:
    """Client-level epsilon at spec.delta after the released rounds (0 before any)."""
    return _accountant(charges(released, population)).epsilon_spent(spec.delta)


def epsilon_after_each(spec: PrivacySpec, released: Sequence[RoundPrivacy], population: int) -> list[float]:
    """The running epsilon after each released round, in order."""
    all_charges = charges(released, population)
    return [_accountant(all_charges[: i + 1]).epsilon_spent(spec.delta) for i in range(len(all_charges))]


def next_round_charge(spec: PrivacySpec, cohort: int, min_clients: int, population: int) -> RoundCharge:
    """The most a round of `cohort` clients can cost: sampling rate cohort / population, and in
    distributed mode the z of the fewest survivors it can succeed with (min_clients)."""
    z = spec.noise_multiplier or 0.0
    if spec.mode == "distributed":
        z = effective_noise_multiplier(z, "distributed", cohort, min(min_clients, cohort))
    return RoundCharge(min(1.0, cohort / population), z)


@dataclass(frozen=True)
class BudgetCheck:
    spent: float  # epsilon so far
    after: float  # epsilon if the next round ran (worst case)
    budget: float

    @property
    def exceeded(self) -> bool:
        return self.after > self.budget

    def message(self, next_round: int) -> str:
        return (
            f"privacy budget: round {next_round} would take epsilon from {self.spent:.4g} to "
            f"{self.after:.4g}, above epsilonBudget {self.budget:g}"
        )


def check_budget(
    spec: PrivacySpec, released: Released, population: int, cohort: int, min_clients: int
) -> BudgetCheck | None:
    """None when no budget is set; otherwise where the next round would leave epsilon."""
    if not spec.enabled or spec.epsilon_budget is None:
        return None
    accountant = _accountant(charges(released, population))
    nxt = next_round_charge(spec, cohort, min_clients, population)
    after = accountant.epsilon_after(spec.delta, nxt.sampling_rate, nxt.noise_multiplier)
    spent = accountant.epsilon_spent(spec.delta)
    return BudgetCheck(spent, after, spec.epsilon_budget)
