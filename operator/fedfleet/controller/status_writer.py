"""What a pass wants written, and writing it only when it differs from what is there.

A pass starts from the training's status as the watch-fed body has it (`Pass.current`, typed)
and edits a copy (`Pass.status`); `StatusWriter` dumps it by alias and patches only the
difference from the body (a JSON merge patch), and nothing when there is none or when it
equals the last patch this operator sent (the body may lag its own write by a watch event).
FederatedRound status is compared with the last status written for that round. An idle
training costs no status writes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fedfleet import vocabulary as vocab
from fedfleet.api.status import RoundStatus, TrainingStatus
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube
from fedfleet.controller.status import set_condition
from fedfleet.logs import get_logger

Object = dict[str, Any]
EmitEvent = Callable[[Object, str, str, str], Awaitable[None] | None]
AsyncEmit = Callable[[Object, str, str, str], Awaitable[None]]
SENT_TRUSTED_SECONDS = 30.0  # how long our own last patch stands in for a lagging body
log = get_logger(component="operator")
TRAINING_FIELDS = frozenset(f.alias or name for name, f in TrainingStatus.model_fields.items())


def as_async(emit: EmitEvent) -> AsyncEmit:
    """One way to post an event through either kind of sink: kopf's is synchronous, a test's may
    be a coroutine function."""

    async def emitted(obj: Object, type_: str, reason: str, message: str) -> None:
        result = emit(obj, type_, reason, message)
        if result is not None:
            await result

    return emitted


@dataclass
class Pass:
    """What one reconcile pass learned and wants written to the training's status."""

    body: Object
    current: TrainingStatus = field(init=False)
    status: TrainingStatus = field(init=False)
    done: bool = False

    def __post_init__(self) -> None:
        try:
            self.current = TrainingStatus.model_validate(self.body.get("status") or {})
        except ValidationError as err:  # not what this operator writes: start over rather than stall
            log.warning("status.unreadable", training=self.body["metadata"].get("name"), error=str(err)[:300])
            self.current = TrainingStatus()
        self.status = self.current.model_copy(deep=True)

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 1))

    def progressing(self, reason: str, message: str) -> None:
        conditions = set_condition(
            self.status.conditions, "Ready", True, "SpecValid", "spec accepted", self.generation
        )
        self.status.conditions = set_condition(
            conditions, "Progressing", True, reason, message, self.generation
        )


def merge_patch(current: Object, wanted: Object, known: frozenset[str] | None = None) -> Object:
    """The JSON merge patch (RFC 7386) that turns `current` into `wanted`. A key `wanted` lacks
    is deleted (null) when `known` is None or names it: nested maps are ours whole, while at the
    top level a key we do not model is left to whoever wrote it."""
    patch: Object = {}
    for key, value in wanted.items():
        old = current.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if sub := merge_patch(old, value):
                patch[key] = sub
        elif old != value or key not in current:
            patch[key] = value
    for key in current:
        if key not in wanted and (known is None or key in known):
            patch[key] = None
    return patch


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._sent: dict[str, tuple[float, Object]] = {}  # training uid -> (when, last patch)
        self._rounds: dict[tuple[str, str], RoundStatus] = {}  # (namespace, name) -> last written status
        self._round_bodies: dict[tuple[str, str], Object] = {}  # ... as the API server holds it
        self._round_refs: dict[tuple[str, str], Object] = {}  # what Events about the round point at
        self._pruned: set[tuple[str, str]] = set()  # rounds deleted by spec.history: not read again

    async def training(self, ref: res.TrainingRef, step: Pass, resource_version: str | None = None) -> bool:
        """Patch the training's status if the pass changed anything; True when it wrote. With
        `resource_version` the write is refused (409) if the object has changed since."""
        wanted = step.status.dump()
        patch = merge_patch(dict(step.body.get("status") or {}), wanted, TRAINING_FIELDS)
        if not patch:
            return False
        sent = self._sent.get(ref.uid)
        if sent and time.monotonic() - sent[0] < SENT_TRUSTED_SECONDS and sent[1] == wanted:
            return False  # our last patch already says this; the body has not caught up yet
        await self.kube.patch_status(vocab.TRAINING, ref.namespace, ref.name, patch, resource_version)
        self._sent[ref.uid] = (time.monotonic(), wanted)
        return True

    async def round_known(self, namespace: str, name: str) -> RoundStatus | None:
        """The round's status as last written (read once after an operator restart); None if
        the FederatedRound does not exist."""
        key = (namespace, name)
        if key in self._pruned:
            return None
        if key not in self._rounds:
            existing = await self.kube.get(vocab.ROUND, namespace, name)
            if existing is None:
                return None
            self._rounds[key] = RoundStatus.model_validate(existing.get("status") or {})
            self._round_bodies[key] = dict(existing.get("status") or {})
            self._round_refs[key] = object_ref(existing)
        return self._rounds[key]

    def round_ref(self, namespace: str, name: str) -> Object:
        return self._round_refs.get((namespace, name)) or {
            "apiVersion": vocab.API_VERSION,
            "kind": vocab.ROUND,
            "metadata": {"name": name, "namespace": namespace},
        }

    async def round(self, namespace: str, name: str, status: RoundStatus) -> bool:
        """Write a FederatedRound's status if it differs from the last written; True when it wrote."""
        key = (namespace, name)
        wanted = status.dump()
        patch = merge_patch(self._round_bodies.get(key, {}), wanted)
        if not patch:
            return False
        await self.kube.patch_status(vocab.ROUND, namespace, name, patch)
        self._rounds[key] = status.model_copy(deep=True)
        self._round_bodies[key] = wanted
        return True

    def round_pruned(self, namespace: str, name: str) -> None:
        """A FederatedRound deleted by spec.history: it reads as absent without asking."""
        key = (namespace, name)
        self._pruned.add(key)
        self._rounds.pop(key, None)
        self._round_bodies.pop(key, None)
        self._round_refs.pop(key, None)

    def round_replaced(self, round_obj: Object) -> None:
        """A FederatedRound this operator just created: nothing written to its status yet."""
        key = (round_obj["metadata"]["namespace"], round_obj["metadata"]["name"])
        self._pruned.discard(key)
        self._rounds[key] = RoundStatus()
        self._round_bodies[key] = {}
        self._round_refs[key] = object_ref(round_obj)

    def round_gone(self, namespace: str, name: str) -> None:
        """A FederatedRound that no longer exists: read it again next time."""
        self._rounds.pop((namespace, name), None)
        self._round_bodies.pop((namespace, name), None)
        self._round_refs.pop((namespace, name), None)

    def forget(self, ref: res.TrainingRef) -> None:
        self._sent.pop(ref.uid, None)
        prefix = f"{ref.name}-"
        for key in [k for k in self._rounds if k[0] == ref.namespace and k[1].startswith(prefix)]:
            del self._rounds[key]
            self._round_bodies.pop(key, None)
            self._round_refs.pop(key, None)
        self._pruned = {k for k in self._pruned if not (k[0] == ref.namespace and k[1].startswith(prefix))}


def object_ref(obj: Object) -> Object:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", vocab.API_VERSION),
        "kind": obj.get("kind", vocab.ROUND),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
    }
