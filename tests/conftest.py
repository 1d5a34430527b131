"""Every test: a test calling `fedfleet.cli.main` in-process has it configure structlog to print to the
stream pytest captures for that one test; put the previous set-up back so that later tests do
not log into a closed file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
