"""An in-memory `PodWriter` (controller/client_pods.py's port to the cluster): pods in a dict,
each call logged, creation stamped as the API server would; the end-to-end tests check the real
writer against the test API server."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fedfleet import vocabulary as vocab

from tests.controller.memory import stamp

Object = dict[str, Any]


@dataclass
class MemoryPods:
    pods: dict[tuple[str, str], Object] = field(default_factory=dict)  # (namespace, name) -> pod
    calls: list[tuple[str, str]] = field(default_factory=list)  # (verb, pod name)

    async def create(self, pod: Object) -> None:
        meta = pod["metadata"]
        self.calls.append(("create", meta["name"]))
        key = (meta["namespace"], meta["name"])
        if key not in self.pods:
            created = copy.deepcopy(pod)
            created["metadata"]["creationTimestamp"] = stamp()
            created["status"] = {"phase": "Pending"}
            self.pods[key] = created

    async def mark_given_up(self, namespace: str, name: str) -> None:
        self.calls.append(("given up", name))
        annotations = self.pods[(namespace, name)]["metadata"].setdefault("annotations", {})
        annotations[vocab.ANNOTATION_GIVEN_UP] = "true"

    async def delete(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))
        self.pods.pop((namespace, name), None)

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]
