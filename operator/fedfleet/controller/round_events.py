"""Wake a training's daemon on its round's events instead of polling the aggregator.

While a round runs, one `WatchRound` stream per training wakes the daemon when the round
changes (at most once per `min_gap` seconds, so a round with many clients does not turn every
client's report into a reconcile pass and a status write) and at once when it ends; the daemon
then sleeps `settings.round_watch_interval_seconds` between passes instead of the base interval.
A broken stream wakes nobody and stops counting as followed: the daemon is back to its base
interval, and the next pass follows the round again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedfleet.logs import get_logger
from fedfleet.rounds.ports import AggregatorError, RoundWatch

Wake = Callable[[], None]
log = get_logger(component="operator")


@dataclass
class RoundEvents:
    min_gap: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _followed: dict[str, tuple[int, asyncio.Task[None]]] = field(default_factory=dict)  # uid -> round

    def follow(self, uid: str, watch: RoundWatch, number: int, wake: Wake) -> None:
        """Follow round `number` of the training (a no-op while it is followed already)."""
        known = self._followed.get(uid)
        if known is not None and known[0] == number and not known[1].done():
            return
        if known is not None:
            known[1].cancel()
        self._followed[uid] = (number, asyncio.create_task(self._follow(watch, number, wake)))

    def following(self, uid: str) -> bool:
        known = self._followed.get(uid)
        return known is not None and not known[1].done()

    def stop(self, uid: str) -> None:
        known = self._followed.pop(uid, None)
        if known is not None:
            known[1].cancel()

    async def close(self) -> None:
        tasks = [task for _, task in self._followed.values()]
        self._followed.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, watch: RoundWatch, number: int, wake: Wake) -> None:
        last = float("-inf")
        try:
            async for _ in watch.watch(number):
                if self.clock() - last >= self.min_gap:
                    last = self.clock()
                    wake()
        except AggregatorError as err:
            log.debug("round.watch_broken", round=number, reason=str(err))
            return
        wake()  # the round ended: a pass records it and starts the next at once
