"""The operator wakes a training on its running round's events (WatchRound) instead of polling:
at most once per gap while the round changes, at once when it ends, never on a broken stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fedfleet.controller.round_events import RoundEvents
from fedfleet.rounds.ports import AggregatorUnavailable, RoundSnapshot

pytestmark = pytest.mark.unit


class Stream:
    """A round's states, released one by one by the test; `broken`: ends with an error."""

    def __init__(self, broken: bool = False) -> None:
        self.states: asyncio.Queue[RoundSnapshot | None] = asyncio.Queue()
        self.broken = broken

    async def watch(self, number: int) -> AsyncIterator[RoundSnapshot]:
        while (state := await self.states.get()) is not None:
            yield state
        if self.broken:
            raise AggregatorUnavailable("UNAVAILABLE: the aggregator went away")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_changes_wake_at_most_once_per_gap_and_the_end_at_once() -> None:
    now = [0.0]
    events = RoundEvents(min_gap=1.0, clock=lambda: now[0])
    stream, woken = Stream(), []
    events.follow("uid", stream, 3, lambda: woken.append("t"))
    events.follow("uid", stream, 3, lambda: woken.append("twice"))  # already followed: no second stream
    for phase in ("Training", "Training", "Aggregating"):
        stream.states.put_nowait(RoundSnapshot(3, "train", phase))  # type: ignore[arg-type]
    await settle()
    assert woken == ["t"] and events.following("uid")
    now[0] = 1.5
    stream.states.put_nowait(RoundSnapshot(3, "train", "Aggregating"))
    await settle()
    assert woken == ["t", "t"]
    stream.states.put_nowait(None)  # the round ended
    await settle()
    assert woken == ["t", "t", "t"] and not events.following("uid")
    await events.close()


async def test_a_broken_stream_wakes_nobody_and_is_no_longer_followed() -> None:
    events = RoundEvents()
    stream, woken = Stream(broken=True), []
    events.follow("uid", stream, 1, lambda: woken.append("t"))
    stream.states.put_nowait(None)
    await settle()
    assert woken == [] and not events.following("uid")
    events.follow("uid", Stream(), 2, lambda: woken.append("t"))  # the next pass follows again
    assert events.following("uid")
    events.stop("uid")
    await settle()
    assert not events.following("uid")
    await events.close()
