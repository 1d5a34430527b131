"""A lifeline the environment names but the process does not hold is refused with a clear error."""

from __future__ import annotations

import os

import pytest
from fedfleet.local.lifeline import ENV, follow_lifeline


@pytest.mark.parametrize("value", ["three", "-1"])
def test_a_lifeline_that_is_no_open_descriptor_is_refused_by_name(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(SystemExit, match=f"{ENV} must name this process's open read end"):
        follow_lifeline()
    assert ENV not in os.environ  # not passed on to what this process starts
