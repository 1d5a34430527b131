"""An in-memory Kubernetes REST store behind the operator's `Kube` port, for unit tests of the
logic above it (client pods, status writes) that run in milliseconds. It speaks the same
paths, merge patches and 404/409 answers as the test API server; the end-to-end tests keep
checking the real thing."""

from __future__ import annotations

import copy
import datetime
import json
import uuid
from typing import Any

from fedfleet.controller.kube import Kube
from kubernetes.client.exceptions import ApiException

Object = dict[str, Any]


def _merge(target: Object, patch: Object) -> Object:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def stamp(seconds_ago: float = 0.0) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class MemoryKube(Kube):
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Object] = {}  # (plural, namespace, name)
        self.requests: list[tuple[str, str]] = []  # (method, path)

    @staticmethod
    def _parse(url: str) -> tuple[str, str, str, str]:
        parts = url.split("/")
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
        tail = parts[parts.index("namespaces") + 2 :] if namespace else parts[-1:]
        plural, name, sub = [*tail, "", ""][:3]
        return plural, namespace, name, sub

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Object:
        self.requests.append((method, url))
        plural, namespace, name, _ = self._parse(url)
        if method == "POST":
            obj = copy.deepcopy(body)
            key = (plural, namespace, obj["metadata"]["name"])
            if key in self.objects:
                raise ApiException(status=409, reason="AlreadyExists")
            obj["metadata"].setdefault("uid", str(uuid.uuid4()))
            obj["metadata"].setdefault("creationTimestamp", stamp())
            self.objects[key] = obj
            return copy.deepcopy(obj)
        if not name:
            items = [
                o for (p, ns, _), o in self.objects.items() if p == plural and ns in ("", namespace or ns)
            ]
            return {"items": copy.deepcopy(items)}
        key = (plural, namespace, name)
        if key not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        if method == "GET":
            return copy.deepcopy(self.objects[key])
        if method == "DELETE":
            return self.objects.pop(key)
        if method == "PATCH":
            return copy.deepcopy(_merge(self.objects[key], json.loads(json.dumps(body))))
        raise ApiException(status=405, reason=method)

    def pods(self) -> dict[tuple[str, str], Object]:
        return {(ns, name): o for (p, ns, name), o in self.objects.items() if p == "pods"}

    def verbs(self) -> list[str]:
        return [m for m, _ in self.requests]
