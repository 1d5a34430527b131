"""The completed training rounds, in memory: indexed by number, paged in order, and the
released DP records kept grouped as each round ends, so that GetStatus and ListRounds read
what is already there instead of rebuilding every round on every call.

Loaded once from the checkpoints' records when the aggregator starts; a round joins when its
checkpoint is durable (`append`), which is the only time anything here changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy

Record = dict[str, Any]  # a checkpoint's round.json


class RoundHistory:
    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: list[Record] = []
        self._numbers: list[int] = []
        self._by_number: dict[int, Record] = {}
        self._released: dict[tuple[str, float, float, int, int], ReleasedRounds] = {}
        for record in sorted(records, key=lambda r: int(r["round"])):
            self.append(record)

    def append(self, record: Record) -> None:
        """A completed round, after every round already here."""
        number = int(record["round"])
        if self._numbers and number <= self._numbers[-1]:
            raise ValueError(f"round {number} completed after round {self._numbers[-1]}")
        self._records.append(record)
        self._numbers.append(number)
        self._by_number[number] = record
        if record.get("privacy") is not None:
            privacy = RoundPrivacy.from_record(record["privacy"])
            known = self._released.get(privacy.accounting_key)
            self._released[privacy.accounting_key] = (
                ReleasedRounds(privacy, 1) if known is None else known.plus(privacy)
            )

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def get(self, number: int) -> Record | None:
        return self._by_number.get(number)

    def last(self, count: int) -> list[Record]:
        """The newest `count` rounds, oldest first."""
        return self._records[-count:] if count > 0 else []

    def after(self, number: int, count: int) -> list[Record]:
        """Up to `count` rounds numbered above `number`, in order."""
        start = bisect.bisect_right(self._numbers, number)
        return self._records[start : start + count]

    @property
    def released(self) -> tuple[ReleasedRounds, ...]:
        """The DP records of the released rounds, grouped by the parameters the accountant charges."""
        return tuple(self._released.values())
