"""What the operator sees of the cluster without asking: kopf's watch-fed indices of the
trainings' pods, of FederationSites and of the platform's ClusterPodTemplate, behind a small
port so a pass reads them for free and unit tests give it an in-memory view instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedfleet import vocabulary as vocab
from fedfleet.api.platform import PLATFORM_NAME

Object = dict[str, Any]
SITES_KEY = "sites"


class Observed(Protocol):
    def pods(self, training: str) -> list[Object]:
        """The pods labelled as the training's (its aggregator and client pods, any namespace)."""
        ...

    def sites(self) -> list[Object]: ...

    def platform(self) -> Object | None:
        """The spec of the ClusterPodTemplate named `default`, if there is one."""
        ...


MESSAGE_LIMIT = 300  # characters of a condition kept in the index


def pod_summary(body: Mapping[str, Any]) -> Object:
    """The parts of a pod a pass reads: kept in the index instead of the whole object."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {
                k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(vocab.GROUP)
            },
            "creationTimestamp": meta.get("creationTimestamp"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "status": {
            "phase": status.get("phase", "Pending"),
            "containerStatuses": [dict(c) for c in status.get("containerStatuses") or []],
            # the scheduler's verdict, for a Pending client's reason in the training's status
            "conditions": [
                {k: str(c.get(k) or "")[:MESSAGE_LIMIT] for k in ("type", "status", "reason", "message")}
                for c in status.get("conditions") or []
                if c.get("type") == "PodScheduled"
            ],
        },
    }


def site_summary(body: Mapping[str, Any]) -> Object:
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


@dataclass
class IndexedObserved:
    """Reads kopf indices: `pods` keyed by training name, `sites` under SITES_KEY, platform
    templates by name."""

    pod_index: Mapping[Any, Iterable[Object]]
    site_index: Mapping[Any, Iterable[Object]]
    platform_index: Mapping[Any, Iterable[Object]]

    def pods(self, training: str) -> list[Object]:
        return list(self.pod_index.get(training, ()))

    def sites(self) -> list[Object]:
        return list(self.site_index.get(SITES_KEY, ()))

    def platform(self) -> Object | None:
        return next(iter(self.platform_index.get(PLATFORM_NAME, ())), None)


@dataclass
class InMemoryObserved:
    """An in-memory cluster view for unit tests of the logic above the port."""

    pod_objects: dict[tuple[str, str], Object] = field(default_factory=dict)
    site_objects: list[Object] = field(default_factory=list)
    platform_spec: Object | None = None

    def pods(self, training: str) -> list[Object]:
        return [
            p
            for p in self.pod_objects.values()
            if p["metadata"]["labels"].get(vocab.LABEL_TRAINING) == training
        ]

    def sites(self) -> list[Object]:
        return list(self.site_objects)

    def platform(self) -> Object | None:
        return self.platform_spec
