"""A small async adapter over the Kubernetes REST API: plain dicts in and out.

It uses the official client's configured ApiClient (kubeconfig or in-cluster) for transport
and auth, and speaks raw paths, so one code path serves core objects and our CRs alike.
`create` is create-or-adopt (a 409 returns the existing object); `ensure` creates what is
missing and reads nothing back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from fedfleet import vocabulary as vocab

Object = dict[str, Any]
CORE = {
    "Namespace": "namespaces",
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Event": "events",
}
CUSTOM = vocab.PLURALS


OTHER = {"NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies")}
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def path(kind: str, namespace: str | None, name: str = "", subresource: str = "") -> str:
    if kind in CORE:
        base, plural = "/api/v1", CORE[kind]
    elif kind in OTHER:
        base, plural = OTHER[kind]
    else:
        base, plural = f"/apis/{vocab.API_VERSION}", CUSTOM[kind]
    ns = f"/namespaces/{quote(namespace)}" if namespace and kind != "Namespace" else ""
    tail = f"/{quote(name)}" if name else ""
    return f"{base}{ns}/{plural}{tail}" + (f"/{subresource}" if subresource else "")


def load_api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or load_api_client()

    def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Object:
        serialized = self.api.param_serialize(
            method=method,
            resource_path=url,
            query_params=query or [],
            body=body,
            auth_settings=["BearerToken"],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
        )
        response = self.api.call_api(*serialized)
        response.read()
        text = response.data.decode() if response.data else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else {}

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Object:
        return await asyncio.to_thread(self._call, method, url, body, query, content_type)

    async def get(self, kind: str, namespace: str | None, name: str) -> Object | None:
        try:
            return await self.request("GET", path(kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None = None, selector: str = "") -> list[Object]:
        query = [("labelSelector", selector)] if selector else []
        return list((await self.request("GET", path(kind, namespace), query=query)).get("items", []))

    async def create(self, obj: Object) -> tuple[Object, bool]:
        """Create, or return the object that already has this name; the flag says which."""
        meta = obj["metadata"]
        try:
            return await self.request("POST", path(obj["kind"], meta.get("namespace")), obj), True
        except ApiException as err:
            if err.status != 409:
                raise
            conflict = err
        existing = await self.get(obj["kind"], meta.get("namespace"), meta["name"])
        if existing is None:  # deleted in between: the next reconcile creates it
            raise conflict
        return existing, False

    async def ensure(self, obj: Object) -> Object | None:
        """Create unless it exists: the created object, or None when the name was taken (no GET)."""
        meta = obj["metadata"]
        try:
            return await self.request("POST", path(obj["kind"], meta.get("namespace")), obj)
        except ApiException as err:
            if err.status != 409:
                raise
            return None

    async def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        try:
            await self.request(
                "DELETE",
                path(kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    async def may(self, verb: str, resource: str, namespace: str) -> bool | None:
        """Whether this identity may `verb` `resource` (core group) in `namespace`, as the API
        server's authorizer answers a SelfSubjectAccessReview (every authenticated identity may
        ask); None when it cannot be asked (an API server without the authorization API)."""
        review: Object = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource}},
        }
        try:
            answer = await self.request("POST", ACCESS_REVIEWS, review)
        except ApiException as err:
            if err.status in (403, 404, 405):
                return None
            raise
        return bool((answer.get("status") or {}).get("allowed"))

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: Object, resource_version: str | None = None
    ) -> Object:
        """A merge patch of the status; with `resource_version`, refused (409) if the object changed."""
        body: Object = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.request(
            "PATCH", path(kind, namespace, name, "status"), body, content_type="application/merge-patch+json"
        )
