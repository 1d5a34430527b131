"""dp-accounting's own figure, composed without our accountant: what every epsilon is checked against."""

from __future__ import annotations

from collections import Counter

import dp_accounting
from dp_accounting.rdp import RdpAccountant

DELTA = 1e-5


def library_epsilon(rounds: list[tuple[float, float]], delta: float = DELTA) -> float:
    """Epsilon at `delta` after Poisson-sampled Gaussian rounds, each (q, z); equal ones composed once."""
    accountant = RdpAccountant()
    for (q, z), count in Counter(rounds).items():
        accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), count)
    return float(accountant.get_epsilon(delta))
