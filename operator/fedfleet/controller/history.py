"""`spec.history`: a training's finished FederatedRounds pruned to the newest `maxRounds`
training rounds and to `maxAgeSeconds`. They are kubectl's view of the rounds; every round's
checkpoint and lineage record stay on the state volume. The final evaluation's record, a
round still running and the newest finished training round are never pruned.

One list of the training's rounds when the completed rounds change (or a minute passed, for the
age limit), so an idle training costs no request.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.api.retention import HistorySpec
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.status_writer import StatusWriter
from fedfleet.logs import get_logger

Object = dict[str, Any]
log = get_logger(component="operator")
AGE_CHECK_SECONDS = 60.0


def _finished_at(obj: Object) -> float:
    status = obj.get("status") or {}
    stamp = status.get("completionTime") or obj["metadata"].get("creationTimestamp") or ""
    try:
        when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return time.time()  # unknown: as if just finished, so never pruned by age
    return when.timestamp()


def rounds_to_prune(rounds: list[Object], history: HistorySpec, now: float) -> list[str]:
    """Names of the finished training rounds beyond `history`'s count or age, oldest first."""
    finished = sorted(
        (
            r
            for r in rounds
            if (r.get("spec") or {}).get("kind", vocab.TRAIN) == vocab.TRAIN
            and (r.get("status") or {}).get("phase") in vocab.FINAL_PHASES
        ),
        key=lambda r: int((r.get("spec") or {}).get("round", 0)),
    )
    doomed = finished[: max(0, len(finished) - history.max_rounds)] if history.max_rounds else []
    if history.max_age_seconds is not None:  # the newest stays: it may be the aggregator's current round
        old = [r for r in finished[:-1] if now - _finished_at(r) > history.max_age_seconds]
        doomed += [r for r in old if r not in doomed]
    return [r["metadata"]["name"] for r in doomed]


class History:
    def __init__(self, kube: Kube, writer: StatusWriter) -> None:
        self.kube = kube
        self.writer = writer
        self._checked: dict[str, tuple[object, float]] = {}  # uid -> (what changed, when)

    def forget(self, uid: str) -> None:
        self._checked.pop(uid, None)

    async def prune(self, ref: res.TrainingRef, history: HistorySpec, progress: object) -> list[str]:
        """Prune when `progress` (e.g. completed rounds and phase) changed or a minute passed."""
        if history.max_rounds is None and history.max_age_seconds is None:
            return []
        last = self._checked.get(ref.uid)
        if last is not None and last[0] == progress and time.monotonic() - last[1] < AGE_CHECK_SECONDS:
            return []
        self._checked[ref.uid] = (progress, time.monotonic())
        selector = f"{vocab.LABEL_TRAINING}={ref.name},{vocab.LABEL_COMPONENT}=round"
        rounds = await self.kube.list(vocab.ROUND, ref.namespace, selector)
        pruned = rounds_to_prune(rounds, history, time.time())
        for name in pruned:
            await self.kube.delete(vocab.ROUND, ref.namespace, name)
            self.writer.round_pruned(ref.namespace, name)
        if pruned:
            log.info("rounds.pruned", training=ref.name, rounds=pruned)
        return pruned
