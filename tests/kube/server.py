"""A Kubernetes API server for tests: kmock's emulator, made to behave like the real one where
kopf, kubectl and the operator depend on it.

Added to kmock 0.8's KubernetesEmulator: server-set metadata (uid, resourceVersion,
creationTimestamp, generation, generateName), 201 on create, a resourceVersion bump per write
and 409 on a stale one, 422 on a failed JSON-patch `test`, status-subresource isolation,
label/field selectors on list and watch, `?resourceVersion=` on watch, finalizers and
ownerReference cascade deletion, the `/api/v1/namespaces` path, discovery that kubectl
accepts, CRD registration with schema validation (422 naming the field), server-side Table
responses with the CRD's printer columns, and a record of every request as an RBAC verb.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import jsonschema
import kmock
from kmock._internal import dicts, enums, parsing

from tests.kube.schema import crd_validator, field_errors, root_rules, rule_errors, unknown_fields

Object = dict[str, Any]

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 mis-parses /api/v1/namespaces[/NAME]: namespaces are a cluster resource."""
    match = re.fullmatch(r"/api/(v1)/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?", path)
    if match:
        return parsing.ParsedPath(
            group="",
            version=match[1],
            plural="namespaces",
            namespace=None,
            name=match[2],
            subresource=match[3],
        )
    return _original_parse_path(path)


parsing.parse_path = _parse_path


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(code: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details={"causes": []})


def _label_requirements(selector: str) -> list[tuple[str, str, Any]]:
    """k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    requirements: list[tuple[str, str, Any]] = []
    for part in (p.strip() for p in re.findall(r"[^,(]+(?:\([^)]*\))?", selector or "")):
        if not part:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", part):
            requirements.append((m[1], m[2], {v.strip() for v in m[3].split(",")}))
        elif m := re.fullmatch(r"([^!=\s]+)\s*(==|=|!=)\s*(\S*)", part):
            requirements.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
        elif part.startswith("!"):
            requirements.append((part[1:], "absent", None))
        else:
            requirements.append((part, "present", None))
    return requirements


def _labels_match(labels: dict[str, str], selector: str) -> bool:
    for key, op, value in _label_requirements(selector):
        present, current = key in labels, labels.get(key)
        if (
            (op == "=" and current != value)
            or (op == "!=" and current == value)
            or (op == "in" and current not in value)
            or (op == "notin" and present and current in value)
            or (op == "present" and not present)
            or (op == "absent" and present)
        ):
            return False
    return True


def _fields_match(obj: Object, selector: str) -> bool:
    for part in filter(None, (selector or "").split(",")):
        negate = "!=" in part
        path, value = re.split(r"!=|==|=", part, maxsplit=1)
        current: Any = obj
        for key in path.split("."):
            current = current.get(key) if isinstance(current, dict) else None
        if (("" if current is None else str(current)) == value) == negate:
            return False
    return True


def _age(stamp: str | None) -> str:
    if not stamp:
        return "<unknown>"
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _jsonpath(obj: Any, path: str) -> Any:
    for key in path.strip(".").split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _canonical_quantities(pod: Object) -> None:
    """As a real API server does, store resource quantities as strings (`nvidia.com/gpu: 1`
    reads back as "1"): the typed Kubernetes client the test kubelet uses refuses numbers there."""
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for kind in ("limits", "requests"):
            amounts = (container.get("resources") or {}).get(kind)
            if isinstance(amounts, dict):
                amounts.update({k: str(v) for k, v in amounts.items() if isinstance(v, int | float)})


@dataclass(frozen=True)
class Call:
    """One request as RBAC sees it."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str | None
    user: str = ""  # the bearer token: each kubeconfig in the tests is one identity


@dataclass
class CustomResource:
    kind: str
    validator: jsonschema.Draft4Validator
    columns: list[Object]
    rules: list[Object]


@attrs.define(kw_only=True)
class TestApiServer(kmock.KubernetesEmulator):
    _versions: Any = attrs.field(factory=lambda: itertools.count(1000), init=False)
    calls: list[Call] = attrs.field(factory=list, init=False)
    custom: dict[Any, CustomResource] = attrs.field(factory=dict, init=False)
    _in_flight: set[int] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kubectl refuses kmock's octet-stream watch responses: serve watches as JSON.
        (
            (self.fallback**1)[enums.action.WATCH]
            << kmock.headers({"Content-Type": "application/json"})
            << (self._serve_watch)
        )

    # -- registration ------------------------------------------------------------------------
    def register_crd(self, crd: Object) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            key = f"{spec['group']}/{version['name']}/{spec['names']['plural']}"
            self.resources[key] = kmock.ResourceInfo(
                kind=spec["names"]["kind"],
                singular=spec["names"].get("singular"),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                shortnames=set(spec["names"].get("shortNames", [])),
                categories=set(spec["names"].get("categories", [])),
                subresources=set(version.get("subresources", {})),
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
            )
            resource = next(
                r
                for r in self.resources
                if str(r) == key
                or (r.group, r.version, r.plural) == (spec["group"], version["name"], spec["names"]["plural"])
            )
            self.custom[resource] = CustomResource(
                spec["names"]["kind"],
                crd_validator(crd, version["name"]),
                version.get("additionalPrinterColumns", []),
                root_rules(crd, version["name"]),
            )

    def add_namespace(self, name: str) -> None:
        self.objects["v1/namespaces", None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "creationTimestamp": _now(),
            },
        }

    # -- helpers -----------------------------------------------------------------------------
    def _next_rv(self) -> str:
        return str(next(self._versions))

    def _has_status(self, resource: Any) -> bool:
        return resource in self.resources and "status" in self.resources[resource].subresources

    def _namespaced(self, resource: Any) -> bool:
        return resource in self.resources and bool(self.resources[resource].namespaced)

    def _validate(self, resource: Any, obj: Object, old: Object | None = None) -> None:
        custom = self.custom.get(resource)
        if custom is None:
            return
        unknown = unknown_fields(custom.validator, obj)
        if unknown:
            raise _error(
                400,
                "BadRequest",
                f'{custom.kind} in version "{resource.version}" cannot be handled as a {custom.kind}: '
                f"strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
            )
        errors = field_errors(custom.validator, obj)
        if not errors:
            errors = rule_errors(custom.rules, obj, old)
        if errors:
            name = (obj.get("metadata") or {}).get("name", "")
            raise _error(
                422, "Invalid", f'{custom.kind}.{resource.group} "{name}" is invalid: ' + ", ".join(errors)
            )

    def _record(self, request: Any) -> None:
        resource = request.resource
        if resource is None or resource.plural is None:
            return
        method, action = request.method, request.action
        if action == enums.action.WATCH:
            verb = "watch"
        elif action == enums.action.LIST:
            verb = "list"
        elif action == enums.action.FETCH:
            verb = "get"
        elif action == enums.action.CREATE:
            verb = "create"
        elif method == enums.method.PUT:
            verb = "update"
        elif action == enums.action.UPDATE:
            verb = "patch"
        elif method == enums.method.DELETE:
            verb = "delete" if request.name else "deletecollection"
        else:
            verb = str(method).lower()
        user = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(
            Call(
                verb,
                resource.group or "",
                resource.plural,
                request.subresource or "",
                request.namespace,
                user,
            )
        )

    async def _emit(self, resource: Any, type_: str, raw: Object) -> None:
        await self._buses[resource].put({"type": type_, "object": raw})

    async def _delete_key(self, key: Any) -> None:
        """Delete (or mark, if it has finalizers) and cascade to dependents."""
        resource = key[0]
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return
            obj = self._objects[key]
            meta = obj.raw.get("metadata", {})
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    obj.patch({"metadata": {"deletionTimestamp": _now(), "resourceVersion": self._next_rv()}})
                    await self._emit(resource, "MODIFIED", obj.raw)
                return
            obj.patch({"metadata": {"resourceVersion": self._next_rv()}})
            raw = obj.raw
            obj.delete()
            await self._emit(resource, "DELETED", raw)
        await self._collect_dependents(meta.get("uid"))

    async def _collect_dependents(self, owner_uid: str | None) -> None:
        if not owner_uid:
            return
        dependents = [
            key
            for key, obj in list(self._objects.items())
            if not obj.deleted
            and any(
                ref.get("uid") == owner_uid for ref in obj.raw.get("metadata", {}).get("ownerReferences", [])
            )
        ]
        for key in dependents:
            await self._delete_key(key)

    # -- request handling --------------------------------------------------------------------
    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        # kmock keeps every request and routes each new one by scanning that whole history:
        # quadratic in a long test. Nothing reads it here (`calls` is our record), so the
        # history keeps only the requests still being served (kmock appends a request just
        # before handing it here, with nothing running in between).
        self._in_flight.add(id(request))
        self._requests[:] = [r for r in self._requests if id(r) in self._in_flight]
        try:
            return await self._serve(request)
        finally:
            self._in_flight.discard(id(request))

    async def _serve(self, request: Any) -> aiohttp.web.StreamResponse:
        self._record(request)
        if request.resource is None or request.resource.plural is None:
            return await super()._handle(request)
        if request.resource.plural == "selfsubjectaccessreviews" and request.method == enums.method.POST:
            # no authorizer here: every request is allowed, and the review says so
            review = dict(request.data) if isinstance(request.data, dict) else {}
            allowed = {"allowed": True, "reason": "the test API server authorizes every request"}
            return aiohttp.web.json_response(review | {"status": allowed}, status=201)
        key = (request.resource, request.namespace, request.name)
        data = request.data
        is_write = request.method in (enums.method.POST, enums.method.PUT, enums.method.PATCH)
        if is_write and not isinstance(data, dict | list):
            raise _error(415, "UnsupportedMediaType", "only JSON bodies are supported")

        if request.action == enums.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if self._namespaced(request.resource) or request.namespace:
                meta["namespace"] = request.namespace or meta.get("namespace") or "default"
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise _error(422, "Invalid", "metadata.name: Required value")
            if self._has_status(request.resource):
                data.pop("status", None)
            if (request.resource.group, request.resource.plural) in (("", "pods"), (None, "pods")):
                _canonical_quantities(data)
            self._validate(request.resource, data)
            meta.update(
                uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=_now(), generation=1
            )
            response = await super()._handle(request)
            if response.status == 200:
                response.set_status(201)
            return response

        if request.action == enums.action.UPDATE and request.name is not None:
            return await self._patch(request, key, data)

        if request.method == enums.method.PUT and request.name is not None and isinstance(data, dict):
            return await self._replace(request, key, data)

        if request.action == enums.action.DELETE and request.name is not None:
            async with self._lock:
                if key not in self._objects or self._objects[key].deleted:
                    raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
                before = copy.deepcopy(self._objects[key].raw)
            await self._delete_key(key)
            async with self._lock:
                obj = self._objects[key]
                return aiohttp.web.json_response(before if obj.deleted else obj.raw)

        if request.method == enums.method.DELETE and request.name is None:
            selector = request.params.get("labelSelector", "")
            keys = [
                k
                for k, o in list(self._objects.items())
                if k[0] == request.resource
                and not o.deleted
                and (request.namespace is None or k[1] == request.namespace)
                and _labels_match(o.raw.get("metadata", {}).get("labels") or {}, selector)
            ]
            for k in keys:
                await self._delete_key(k)
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Success"})

        return await super()._handle(request)

    async def _patch(self, request: Any, key: Any, data: Any) -> aiohttp.web.StreamResponse:
        released_uid = None
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
            current = copy.deepcopy(self._objects[key].raw)
            status_sub = self._has_status(request.resource)
            on_status = request.subresource == "status"
            if isinstance(data, dict):  # merge patch (strategic merge treated as merge)
                wanted = (data.get("metadata") or {}).get("resourceVersion")
                if wanted and wanted != current["metadata"].get("resourceVersion"):
                    raise _error(
                        409,
                        "Conflict",
                        f"Operation cannot be fulfilled on {request.resource.plural} "
                        f'"{request.name}": the object has been modified; please apply your changes '
                        "to the latest version and try again",
                    )
                if status_sub and on_status:
                    for field in [k for k in data if k not in ("status", "metadata")]:
                        del data[field]
                elif status_sub:
                    data.pop("status", None)
                new = dicts.merge_patch_dict(current, data)
                self._validate(request.resource, new, current)
                data.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
                if new.get("spec") != current.get("spec"):
                    data["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            else:  # JSON patch
                if status_sub:
                    data[:] = [
                        op
                        for op in data
                        if op.get("op") == "test" or op.get("path", "").startswith("/status") == on_status
                    ]
                try:
                    new = jsonpatch.apply_patch(current, data)
                except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
                    raise _error(422, "Invalid", f"{type(err).__name__}: {err}") from None
                self._validate(request.resource, new, current)
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next_rv()})
                if new.get("spec") != current.get("spec"):
                    data.append(
                        {
                            "op": "add",
                            "path": "/metadata/generation",
                            "value": current["metadata"].get("generation", 1) + 1,
                        }
                    )
            meta = new.get("metadata", {})
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                released_uid = meta.get("uid")
        response = await super()._handle(request)
        await self._collect_dependents(released_uid)
        return response

    async def _replace(self, request: Any, key: Any, data: Object) -> aiohttp.web.StreamResponse:
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
            obj = self._objects[key]
            current = copy.deepcopy(obj.raw)
            current_meta = current["metadata"]
            wanted = (data.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current_meta.get("resourceVersion"):
                raise _error(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the "
                    "latest version and try again",
                )
            if self._has_status(request.resource):
                data = (
                    dict(current, status=data.get("status"))
                    if request.subresource == "status"
                    else dict(data, status=current.get("status"))
                )
            self._validate(request.resource, data, current)
            meta = data.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
                if field in current_meta:
                    meta[field] = current_meta[field]
            meta["resourceVersion"] = self._next_rv()
            meta["generation"] = current_meta.get("generation", 1) + (data.get("spec") != current.get("spec"))
            obj.history.append(data)
            await self._emit(request.resource, "MODIFIED", obj.raw)
            raw = obj.raw
        if raw["metadata"].get("deletionTimestamp") and not raw["metadata"].get("finalizers"):
            await self._delete_key(key)
        return aiohttp.web.json_response(raw)

    # -- reading -----------------------------------------------------------------------------
    def _selected(self, request: Any, raw: Object) -> bool:
        return _labels_match(
            raw.get("metadata", {}).get("labels") or {}, request.params.get("labelSelector", "")
        ) and _fields_match(raw, request.params.get("fieldSelector", ""))

    def _wants_table(self, request: Any) -> bool:
        return "as=Table" in request.headers.get("Accept", "") and request.resource in self.custom

    def _table(self, resource: Any, items: list[Object]) -> Object:
        columns = self.custom[resource].columns
        definitions = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
        definitions += [
            {
                "name": c["name"],
                "type": "string" if c["type"] == "date" else c["type"],
                "format": "",
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in columns
        ]
        rows = []
        for item in items:
            cells: list[Any] = [item["metadata"]["name"]]
            for c in columns:
                value = _jsonpath(item, c["jsonPath"])
                cells.append(_age(value) if c["type"] == "date" else value)
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": item["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": self._next_rv()},
            "columnDefinitions": definitions,
            "rows": rows,
        }

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        result["items"] = [i for i in result["items"] if self._selected(request, i)]
        if self._wants_table(request):
            return self._table(request.resource, result["items"])
        result["metadata"] = {"resourceVersion": self._next_rv()}
        info = self.resources.get(request.resource)
        result.setdefault("kind", f"{(info.kind if info else None) or 'Object'}List")
        result.setdefault("apiVersion", f"{request.resource.group}/{request.resource.version}".lstrip("/"))
        return result

    async def _serve_fetch(self, request: Any) -> Any:
        result = await super()._serve_fetch(request)
        return self._table(request.resource, [result]) if self._wants_table(request) else result

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        since_text = request.params.get("resourceVersion")
        since = int(since_text) if since_text and since_text.isdigit() else None
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and "object" in event:
                version = event["object"].get("metadata", {}).get("resourceVersion", "0")
                if since is not None and version.isdigit() and int(version) <= since:
                    continue
                if not self._selected(request, event["object"]):
                    continue
            yield event

    # -- discovery, as kubectl expects it ----------------------------------------------------
    async def _serve_version(self, request: Any) -> Any:
        result = await super()._serve_version(request)
        result["groupVersion"] = result["groupVersion"].lstrip("/")
        for resource in result["resources"]:
            if "/" in resource["name"]:
                resource.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return result

    @staticmethod
    def _version_order(version: str) -> tuple[int, int, int]:
        m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
        if not m:
            return (-1, 0, 0)
        return (int(m[1]), {"alpha": 0, "beta": 1, None: 2}[m[2]], int(m[3] or 0))

    async def _serve_apis(self, request: Any) -> Any:
        result = await super()._serve_apis(request)
        for group in result["groups"]:
            group["versions"].sort(key=lambda v: self._version_order(v["version"]), reverse=True)
            group["preferredVersion"] = group["versions"][0]
        return result

    async def _serve_group(self, request: Any) -> Any:
        result = await super()._serve_group(request)
        result["versions"].sort(key=lambda v: self._version_order(v["version"]), reverse=True)
        result["preferredVersion"] = result["versions"][0]
        return result


async def serve(
    server: TestApiServer,
    port: int,
    ready: asyncio.Event,
    stop: asyncio.Event,
    holder: dict[str, Any],
    host: str = "127.0.0.1",
) -> None:
    async with server, kmock.Server(server, host=host, port=port) as http:
        server.resources.load_bundled()
        server.add_namespace("default")
        holder["url"] = str(http.url).rstrip("/")
        ready.set()
        await stop.wait()
