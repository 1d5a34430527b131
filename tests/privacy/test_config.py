"""`spec.privacy`: camelCase manifest keys, ranges checked per field, complete when enabled."""

from __future__ import annotations

import pytest
from fedfleet.privacy import PrivacySpec
from pydantic import ValidationError


def test_defaults_are_off_and_need_nothing() -> None:
    spec = PrivacySpec()
    assert not spec.enabled and spec.mode == "central" and spec.delta == 1e-5
    assert spec.clip_norm is None and spec.noise_multiplier is None and spec.epsilon_budget is None


def test_manifest_keys_are_camel_case() -> None:
    spec = PrivacySpec.model_validate(
        {"enabled": True, "mode": "distributed", "clipNorm": 1.0, "noiseMultiplier": 1.1, "epsilonBudget": 8}
    )
    assert (spec.clip_norm, spec.noise_multiplier, spec.epsilon_budget) == (1.0, 1.1, 8.0)
    assert PrivacySpec(enabled=True, clip_norm=1.0, noise_multiplier=0.0).noise_multiplier == 0.0
    dumped = spec.model_dump(by_alias=True)
    assert {"clipNorm", "noiseMultiplier", "epsilonBudget"} <= dumped.keys()
    assert PrivacySpec.model_validate(dumped) == spec


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"clipNorm": 0}, "clipNorm"),
        ({"clipNorm": float("inf")}, "clipNorm"),
        ({"noiseMultiplier": -0.1}, "noiseMultiplier"),
        ({"delta": 0}, "delta"),
        ({"delta": 1}, "delta"),
        ({"epsilonBudget": 0}, "epsilonBudget"),
        ({"mode": "local"}, "mode"),
        ({"clipnorm": 1.0}, "clipnorm"),
    ],
)
def test_bad_fields_are_named(block: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        PrivacySpec.model_validate(block)
    assert err.value.errors()[0]["loc"] == (field,)


def test_enabled_needs_clip_norm_and_noise() -> None:
    with pytest.raises(ValidationError, match="clipNorm and noiseMultiplier"):
        PrivacySpec.model_validate({"enabled": True})
    with pytest.raises(ValidationError, match="noiseMultiplier"):
        PrivacySpec.model_validate({"enabled": True, "clipNorm": 1.0})
    with pytest.raises(ValidationError, match="infinite epsilon"):
        PrivacySpec.model_validate({"enabled": True, "clipNorm": 1, "noiseMultiplier": 0, "epsilonBudget": 3})


def test_schema_describes_every_field() -> None:
    props = PrivacySpec.model_json_schema(by_alias=True)["properties"]
    assert set(props) == {"enabled", "mode", "clipNorm", "noiseMultiplier", "delta", "epsilonBudget"}
    assert all(p.get("description") for p in props.values())
