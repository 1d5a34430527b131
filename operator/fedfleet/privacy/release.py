"""DP-FedAvg in a round: what a client does to its upload, what the aggregator does to the sum.

Both sides follow the same rule so the accountant's assumptions hold: every client's update is
clipped to clipNorm and counts with weight 1 (never its example count: a weight w would let one
client move the sum by w x clipNorm), and the mean divides the noised sum by the round's
cohort size n, a number fixed before any update arrives, not by how many updates did.
`RoundPrivacy` is what a released round carried; it goes into round.json, and the controller
charges the accountant from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fedfleet.api.privacy import PrivacySpec
from fedfleet.privacy._arrays import FloatArray
from fedfleet.privacy.clipping import ClipResult, clip_update
from fedfleet.privacy.noise import NoiseMode, add_gaussian_noise, effective_noise_multiplier, noise_std

if TYPE_CHECKING:
    from fedfleet.privacy.accountant import RoundCharge


def _settings(spec: PrivacySpec) -> tuple[float, float]:
    if not spec.enabled or spec.clip_norm is None or spec.noise_multiplier is None:
        raise ValueError("privacy is not enabled with clipNorm and noiseMultiplier")
    return spec.clip_norm, spec.noise_multiplier


@dataclass(frozen=True, slots=True)
class RoundPrivacy:
    """The DP a released training round carried: enough to charge it, and to audit it."""

    mode: NoiseMode
    clip_norm: float
    noise_multiplier: float  # configured z
    expected_clients: int  # n: the cohort the noise was calibrated for; the mean's denominator
    survivors: int  # s: clients whose updates are in the sum
    max_update_norm: float = -1.0  # largest update norm the aggregator measured; -1: masked, unseen

    @property
    def effective_noise_multiplier(self) -> float:
        """z of the released sum: z (central), z sqrt(s / n) (distributed, s survivors)."""
        return effective_noise_multiplier(
            self.noise_multiplier, self.mode, self.expected_clients, self.survivors
        )

    @property
    def accounting_key(self) -> tuple[str, float, float, int, int]:
        """What the accountant's charge depends on (everything but the audit figure)."""
        return (self.mode, self.clip_norm, self.noise_multiplier, self.expected_clients, self.survivors)

    def charge(self, population: int) -> RoundCharge:
        """The accountant's entry: sampling rate n / population, the effective z."""
        from fedfleet.privacy.accountant import RoundCharge  # dp-accounting: slow import

        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        return RoundCharge(min(1.0, self.expected_clients / population), self.effective_noise_multiplier)

    def to_record(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "clipNorm": self.clip_norm,
            "noiseMultiplier": self.noise_multiplier,
            "effectiveNoiseMultiplier": self.effective_noise_multiplier,
            "expectedClients": self.expected_clients,
            "survivors": self.survivors,
            "maxUpdateNorm": self.max_update_norm,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RoundPrivacy:
        mode = str(record["mode"])
        if mode not in ("central", "distributed"):
            raise ValueError(f"round privacy record: unknown mode {mode!r}")
        return cls(
            cast(NoiseMode, mode),
            float(record["clipNorm"]),
            float(record["noiseMultiplier"]),
            int(record["expectedClients"]),
            int(record["survivors"]),
            float(record.get("maxUpdateNorm", -1.0)),
        )


@dataclass(frozen=True, slots=True)
class ReleasedRounds:
    """`rounds` released training rounds that carried the same DP (`privacy`): the accountant
    charges them as one entry, so the privacy accounting's input stays the size of the
    distinct parameter sets however many rounds ran (composition commutes)."""

    privacy: RoundPrivacy
    rounds: int

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"a group of released rounds holds at least 1 round, got {self.rounds}")

    def plus(self, record: RoundPrivacy) -> ReleasedRounds:
        """This group with one more round of the same parameters."""
        if record.accounting_key != self.privacy.accounting_key:
            raise ValueError("a released round joins only the group of its own parameters")
        norm = max(self.privacy.max_update_norm, record.max_update_norm)
        return ReleasedRounds(replace(self.privacy, max_update_norm=norm), self.rounds + 1)

    def charge(self, population: int) -> RoundCharge:
        from fedfleet.privacy.accountant import RoundCharge  # dp-accounting: slow import

        one = self.privacy.charge(population)
        return RoundCharge(one.sampling_rate, one.noise_multiplier, self.rounds)


def group_released(released: Iterable[RoundPrivacy]) -> tuple[ReleasedRounds, ...]:
    """Released rounds grouped by the parameters the accountant charges, in order of first
    appearance; a group's max_update_norm is its largest."""
    groups: dict[tuple[str, float, float, int, int], ReleasedRounds] = {}
    for record in released:
        known = groups.get(record.accounting_key)
        groups[record.accounting_key] = ReleasedRounds(record, 1) if known is None else known.plus(record)
    return tuple(groups.values())


def privatize_update(
    update: Mapping[str, FloatArray], spec: PrivacySpec, expected_clients: int
) -> ClipResult:
    """Client side, in place, before quantization and masking: clip all tensors jointly to
    clipNorm; in distributed mode add this client's share N(0, (zC)^2 / n) of the noise."""
    clip_norm, z = _settings(spec)
    result = clip_update(update, clip_norm)
    if spec.mode == "distributed":
        add_gaussian_noise(update, noise_std(z, clip_norm, "distributed", expected_clients))
    return result


def release_mean(
    total: FloatArray,
    spec: PrivacySpec,
    expected_clients: int,
    survivors: int,
    max_update_norm: float = -1.0,
) -> RoundPrivacy:
    """Aggregator side, in place: `total` (the unmasked sum of weight-1 clipped updates) gets
    the central noise N(0, (zC)^2) if the mode says so, then becomes the mean over n."""
    clip_norm, z = _settings(spec)
    if not 0 < survivors <= expected_clients:
        raise ValueError(f"survivors must be within 1..{expected_clients}, got {survivors}")
    if spec.mode == "central":
        add_gaussian_noise(total, noise_std(z, clip_norm, "central"))
    np.divide(total, total.dtype.type(expected_clients), out=total)
    return RoundPrivacy(spec.mode, clip_norm, z, expected_clients, survivors, max_update_norm)
