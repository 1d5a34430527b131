"""Client-level differential privacy for DP-FedAvg: clipping, Gaussian noise, accounting.

Where each step sits (a round with `spec.privacy.enabled`)::

    client:  train -> delta = local - global -> clip_update(delta, C)
             -> [distributed: add_gaussian_noise(delta, noise_std(z, C, "distributed", n))]
             -> quantize -> SecAgg mask -> upload
    server:  unmask the sum -> [central: add_gaussian_noise(sum, noise_std(z, C))]
             -> average -> server optimizer step
    controller, before each round:  accountant.would_exceed(budget, delta, q, z) -> stop
             after each released round:  accountant.record_round(q, effective z)

Clipping bounds one client's influence on the sum (sensitivity C); the noise makes the sum
(epsilon, delta)-DP with respect to adding or removing one client; the accountant composes the
rounds. Pure numpy plus `dp-accounting`; see docs/privacy.md. The accountant is imported on
first use: `dp-accounting` takes over a second to import (scipy), and the aggregator and the
clients, which only clip and noise, should not pay for it at every start.
"""

from typing import TYPE_CHECKING, Any

from fedfleet.api.privacy import PrivacySpec
from fedfleet.privacy._arrays import Update
from fedfleet.privacy.clipping import ClipResult, clip_update, l2_norm
from fedfleet.privacy.noise import (
    NoiseMode,
    add_gaussian_noise,
    effective_noise_multiplier,
    noise_std,
    secure_rng,
)
from fedfleet.privacy.release import RoundPrivacy, privatize_update, release_mean

if TYPE_CHECKING:
    from fedfleet.privacy.accountant import PrivacyAccountant, RoundCharge


def __getattr__(name: str) -> Any:
    if name in ("PrivacyAccountant", "RoundCharge"):
        from fedfleet.privacy import accountant

        return getattr(accountant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClipResult",
    "NoiseMode",
    "PrivacyAccountant",
    "PrivacySpec",
    "RoundCharge",
    "RoundPrivacy",
    "Update",
    "add_gaussian_noise",
    "clip_update",
    "effective_noise_multiplier",
    "l2_norm",
    "noise_std",
    "privatize_update",
    "release_mean",
    "secure_rng",
]
