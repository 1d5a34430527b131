"""Privacy accounting for DP-FedAvg with Google's `dp-accounting` (RDP).

Each round is a Poisson-subsampled Gaussian mechanism on the sum of clipped client updates:
every client takes part with probability q (the client sampling rate: expected cohort /
population) and the sum carries Gaussian noise of std z * clip_norm. Under add-or-remove-one
client adjacency, RDP composes these rounds and converts to (epsilon, delta). Rounds may
differ (q and z per round), for instance the effective z of a distributed-noise round with
dropouts, so the ledger keeps what each round really carried.

The ledger is plain data (JSON) so the spend survives aggregator restarts via checkpoints;
the RDP curve is recomputed from it on load.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.rdp import RdpAccountant

STATE_VERSION = 1


class _DropFracOrderWarnings(logging.Filter):
    """dp-accounting logs each fractional RDP order its series cannot converge for (low orders
    at large q). Such an order is dropped from the min over orders, which can only raise
    epsilon, so the line is noise in the aggregator's log, once per order and round."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_compute_log_a_frac failed to converge")


logging.getLogger("absl").addFilter(_DropFracOrderWarnings())


@dataclass(frozen=True, slots=True)
class RoundCharge:
    """`count` consecutive rounds, each sampling clients at rate q with noise multiplier z."""

    sampling_rate: float
    noise_multiplier: float
    count: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sampling_rate) and 0 <= self.sampling_rate <= 1):
            raise ValueError(f"sampling_rate must be in [0, 1], got {self.sampling_rate}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")

    def event(self) -> dp_accounting.DpEvent:
        return dp_accounting.PoissonSampledDpEvent(
            self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier)
        )


def _check_delta(delta: float) -> None:
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta}")


class PrivacyAccountant:
    """Client-level (epsilon, delta) spent by a training so far, and whether a round fits.

    Composition is commutative, so the RDP curve is built from the distinct (q, z) pairs with
    their total counts: loading costs one RDP evaluation per distinct pair, not per round.
    """

    def __init__(self, ledger: Iterable[RoundCharge] = ()) -> None:
        self._ledger: list[RoundCharge] = []
        counts: dict[tuple[float, float], int] = {}
        for charge in ledger:
            self._append(charge)
            key = (charge.sampling_rate, charge.noise_multiplier)
            counts[key] = counts.get(key, 0) + charge.count
        self._rdp = RdpAccountant()
        for (q, z), n in counts.items():
            self._rdp.compose(RoundCharge(q, z).event(), n)

    def _append(self, charge: RoundCharge) -> None:
        last = self._ledger[-1] if self._ledger else None
        q, z = charge.sampling_rate, charge.noise_multiplier
        if last is not None and (last.sampling_rate, last.noise_multiplier) == (q, z):
            self._ledger[-1] = RoundCharge(q, z, last.count + charge.count)
        else:
            self._ledger.append(charge)

    @property
    def ledger(self) -> tuple[RoundCharge, ...]:
        """The rounds charged, in order, consecutive equal rounds merged."""
        return tuple(self._ledger)

    @property
    def rounds(self) -> int:
        return sum(c.count for c in self._ledger)

    def record_round(self, sampling_rate: float, noise_multiplier: float, count: int = 1) -> None:
        """Charge `count` released rounds with the q and the (effective) z they really had."""
        charge = RoundCharge(float(sampling_rate), float(noise_multiplier), count)
        self._rdp.compose(charge.event(), count)
        self._append(charge)

    def epsilon_spent(self, delta: float) -> float:
        """Epsilon at `delta` over all recorded rounds (0 before any; inf if one had z = 0)."""
        _check_delta(delta)
        return float(self._rdp.get_epsilon(delta))

    def epsilon_after(self, delta: float, next_q: float, next_z: float) -> float:
        """Epsilon at `delta` if one more round with (next_q, next_z) were released."""
        _check_delta(delta)
        trial = copy.deepcopy(self._rdp)
        trial.compose(RoundCharge(float(next_q), float(next_z)).event())
        return float(trial.get_epsilon(delta))

    def would_exceed(self, budget: float, delta: float, next_q: float, next_z: float) -> bool:
        """True if releasing one more round would take epsilon above `budget`: don't run it.

        In distributed mode pass the z of the fewest survivors the round can complete with,
        so dropouts cannot push the real charge past the budget.
        """
        if not budget > 0:
            raise ValueError(f"budget must be positive, got {budget}")
        return self.epsilon_after(delta, next_q, next_z) > budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "accounting": "rdp",
            "neighboring": "add_or_remove_one",
            "rounds": [
                {"samplingRate": c.sampling_rate, "noiseMultiplier": c.noise_multiplier, "count": c.count}
                for c in self._ledger
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrivacyAccountant:
        if state.get("version") != STATE_VERSION or state.get("accounting") != "rdp":
            raise ValueError(
                f"unsupported privacy accountant state: version {state.get('version')!r}, "
                f"accounting {state.get('accounting')!r}"
            )
        return cls(
            RoundCharge(float(r["samplingRate"]), float(r["noiseMultiplier"]), int(r["count"]))
            for r in state["rounds"]
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> PrivacyAccountant:
        state = json.loads(text)
        if not isinstance(state, dict):
            raise ValueError("privacy accountant state must be a JSON object")
        return cls.from_dict(state)
