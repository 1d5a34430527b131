"""The engine's time: wall-clock deadlines behind a small port, so tests can move time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (deadlines and timestamps travel as Unix times)."""

    async def sleep_until(self, when: float) -> None:
        """Return once `now() >= when`."""


class WallClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.time()))
