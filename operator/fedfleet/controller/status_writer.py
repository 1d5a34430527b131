"""What a pass wants written, and writing it only when it differs from what is there.

A pass builds the training's status fragment (`Pass.status`); `StatusWriter` patches it only
when some key differs from the watch-fed body or from the last patch this operator sent (the
body may lag its own write by a watch event). FederatedRound status is compared with the last
status written for that round. An idle training costs no status writes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.status import set_condition

Object = dict[str, Any]
EmitEvent = Callable[[Object, str, str, str], Awaitable[None] | None]
SENT_TRUSTED_SECONDS = 30.0  # how long our own last patch stands in for a lagging body


@dataclass
class Pass:
    """What one reconcile pass learned and wants written to the training's status."""

    body: Object
    status: Object = field(default_factory=dict)
    done: bool = False

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 1))

    @property
    def current(self) -> Object:
        return dict(self.body.get("status") or {})

    def progressing(self, reason: str, message: str) -> None:
        conditions = set_condition(
            self.current.get("conditions", []), "Ready", True, "SpecValid", "spec accepted", self.generation
        )
        self.status["conditions"] = set_condition(
            conditions, "Progressing", True, reason, message, self.generation
        )


def differs(wanted: Object, current: Object) -> bool:
    """True when a merge patch of `wanted` would change `current` (None deletes a key)."""
    return any(current.get(key) != value for key, value in wanted.items())


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._sent: dict[str, tuple[float, Object]] = {}  # training uid -> (when, last patch)
        self._rounds: dict[tuple[str, str], Object] = {}  # (namespace, name) -> last written status
        self._round_refs: dict[tuple[str, str], Object] = {}  # what Events about the round point at

    async def training(self, ref: res.TrainingRef, step: Pass) -> bool:
        """Patch the training's status if the pass changed anything; True when it wrote."""
        if not differs(step.status, step.current):
            return False
        sent = self._sent.get(ref.uid)
        if sent and time.monotonic() - sent[0] < SENT_TRUSTED_SECONDS and not differs(step.status, sent[1]):
            return False  # our last patch already says this; the body has not caught up yet
        await self.kube.patch_status(vocab.TRAINING, ref.namespace, ref.name, step.status)
        self._sent[ref.uid] = (time.monotonic(), dict(step.status))
        return True

    async def round_known(self, namespace: str, name: str) -> Object | None:
        """The round's status as last written (read once after an operator restart); None if
        the FederatedRound does not exist."""
        key = (namespace, name)
        if key not in self._rounds:
            existing = await self.kube.get(vocab.ROUND, namespace, name)
            if existing is None:
                return None
            self._rounds[key] = dict(existing.get("status") or {})
            self._round_refs[key] = object_ref(existing)
        return self._rounds[key]

    def round_ref(self, namespace: str, name: str) -> Object:
        return self._round_refs.get((namespace, name)) or {
            "apiVersion": vocab.API_VERSION,
            "kind": vocab.ROUND,
            "metadata": {"name": name, "namespace": namespace},
        }

    async def round(self, namespace: str, name: str, status: Object) -> bool:
        """Write a FederatedRound's status if it differs from the last written; True when it wrote."""
        key = (namespace, name)
        if key in self._rounds and not differs(status, self._rounds[key]):
            return False
        await self.kube.patch_status(vocab.ROUND, namespace, name, status)
        self._rounds[key] = self._rounds.get(key, {}) | status
        return True

    def round_replaced(self, round_obj: Object) -> None:
        """A FederatedRound this operator just created: nothing written to its status yet."""
        key = (round_obj["metadata"]["namespace"], round_obj["metadata"]["name"])
        self._rounds[key] = {}
        self._round_refs[key] = object_ref(round_obj)

    def round_gone(self, namespace: str, name: str) -> None:
        """A FederatedRound that no longer exists: read it again next time."""
        self._rounds.pop((namespace, name), None)
        self._round_refs.pop((namespace, name), None)

    def forget(self, ref: res.TrainingRef) -> None:
        self._sent.pop(ref.uid, None)
        prefix = f"{ref.name}-"
        for key in [k for k in self._rounds if k[0] == ref.namespace and k[1].startswith(prefix)]:
            del self._rounds[key]
            self._round_refs.pop(key, None)


def object_ref(obj: Object) -> Object:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", vocab.API_VERSION),
        "kind": obj.get("kind", vocab.ROUND),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
    }
