"""A training's key material as Secrets: its CA (or the user's issuer), the aggregator's server
certificate, one client certificate per site client (in the site's namespace), the lineage
signing key, and the controller's own certificate (kept in memory, never stored).

A check lists the training's Secrets once (by label) and re-issues only what
`rotation.renewal_reason` says must go: missing, running out, under another CA, other names.
Lifetimes are hours to weeks, so after a complete check the next one waits CHECK_SECONDS
(FEDFLEET_CERTIFICATE_CHECK_SECONDS, default 60) unless the sites or TLS settings changed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube, path
from fedfleet.identity.ca import Bundle, Issuer, IssuerError
from fedfleet.identity.names import Identity, aggregator_dns_names
from fedfleet.identity.rotation import lifetime_reason, renewal_reason
from fedfleet.logs import get_logger
from fedfleet.provenance.signing import new_signing_key_pem

Object = dict[str, Any]
TLS_TYPE = "kubernetes.io/tls"
CHECK_SECONDS = float(os.environ.get("FEDFLEET_CERTIFICATE_CHECK_SECONDS", "60"))
log = get_logger(component="operator")


class CertificateError(Exception):
    """The spec's TLS settings cannot be honoured; reported as InvalidSpec."""


@dataclass(frozen=True)
class Wanted:
    secret: str
    namespace: str
    identity: Identity
    dns_names: tuple[str, ...] = ()


class Certificates:
    def __init__(self, kube: Kube, check_seconds: float = CHECK_SECONDS) -> None:
        self.kube = kube
        self.check_seconds = check_seconds
        self._controller: dict[tuple[str, str], Bundle] = {}
        self._checked: dict[tuple[str, str], tuple[float, object]] = {}

    async def ensure(
        self, ref: res.TrainingRef, spec: FederatedTrainingSpec, sites: list[res.SiteRef]
    ) -> Bundle:
        """Make every Secret the pods mount current; returns the controller's client bundle."""
        if not spec.tls.enabled:
            raise CertificateError(
                "spec.tls.enabled: false is for `fedfleet local run` only; a cluster always uses mTLS"
            )
        key = (ref.namespace, ref.name)
        plan = (ref.uid, spec.tls, spec.clients_per_site, tuple((s.name, s.namespace) for s in sites))
        last = self._checked.get(key)
        if last and last[1] == plan and time.monotonic() - last[0] < self.check_seconds:
            return self._controller[key]
        found = {
            (s["metadata"]["namespace"], s["metadata"]["name"]): s
            for s in await self.kube.list("Secret", None, f"{res.GROUP}/training={ref.name}")
        }
        issuer = await self._issuer(ref, spec, found)
        lifetime = datetime.timedelta(hours=spec.tls.certificate_lifetime_hours)
        wanted = [
            Wanted(
                res.tls_secret_name(ref.name, "aggregator"),
                ref.namespace,
                Identity(ref.namespace, ref.name, "aggregator"),
                tuple(aggregator_dns_names(ref.name, ref.namespace)),
            )
        ]
        for site in sites:
            for index in range(spec.clients_per_site):
                cid = res.client_id(site.name, index)
                identity = Identity.of_client(ref.namespace, ref.name, site.name, cid)
                wanted.append(Wanted(res.tls_secret_name(ref.name, cid), site.namespace, identity))
        for want in wanted:
            existing = found.get((want.namespace, want.secret))
            bundle = _bundle_of(existing)
            reason = renewal_reason(bundle, want.identity, issuer.trust_pem, want.dns_names)
            if reason is not None:
                fresh = issuer.issue(want.identity, lifetime, want.dns_names)
                component = "aggregator" if want.identity.role == "aggregator" else "client"
                obj = res.secret(ref, want.secret, want.namespace, component, TLS_TYPE, fresh.secret_data())
                await self._write(obj, existing)
                log.info(
                    "certificate.issued",
                    training=ref.name,
                    secret=want.secret,
                    namespace=want.namespace,
                    identity=want.identity.uri,
                    reason=reason,
                )
        await self._lineage_key(ref, found)
        bundle = self._controller_bundle(ref, issuer, lifetime)
        self._checked[key] = (time.monotonic(), plan)
        return bundle

    def controller_bundle(self, ref: res.TrainingRef) -> Bundle:
        """The one `ensure` made this pass (ensure runs before any call to the aggregator)."""
        return self._controller[(ref.namespace, ref.name)]

    async def _issuer(
        self, ref: res.TrainingRef, spec: FederatedTrainingSpec, found: dict[tuple[str, str], Object]
    ) -> Issuer:
        name = spec.tls.issuer_secret
        if name:
            given = await self.kube.get("Secret", ref.namespace, name)
            if given is None:
                raise CertificateError(
                    f"spec.tls.issuerSecret: no Secret {name} in namespace {ref.namespace}"
                )
            data = dict(given.get("data") or {})
            try:
                if "tls.crt" not in data or "tls.key" not in data:
                    raise IssuerError("needs tls.crt and tls.key (a CA's certificate and key)")
                raw = {k: base64.b64decode(v) for k, v in data.items()}
                return Issuer.from_pem(raw["tls.crt"], raw["tls.key"], raw.get("ca.crt", b""))
            except (IssuerError, ValueError) as err:
                raise CertificateError(f"spec.tls.issuerSecret: Secret {name}: {err}") from None
        secret_name = res.ca_secret_name(ref.name)
        existing = found.get((ref.namespace, secret_name))
        bundle = _bundle_of(existing)
        if bundle is not None:
            try:
                issuer = Issuer.from_pem(bundle.cert_pem, bundle.key_pem)
                if lifetime_reason(issuer.cert) is None:
                    return issuer
            except IssuerError as err:
                log.warning("ca.unreadable", training=ref.name, secret=secret_name, reason=str(err))
        leaf_hours = spec.tls.certificate_lifetime_hours
        issuer = Issuer.generate(
            f"{ref.namespace}/{ref.name} fedfleet CA", datetime.timedelta(hours=max(3 * leaf_hours, 24 * 365))
        )
        obj = res.secret(ref, secret_name, ref.namespace, "ca", TLS_TYPE, issuer.as_bundle().secret_data())
        await self._write(obj, existing)
        log.info("ca.issued", training=ref.name, secret=secret_name, renewed=existing is not None)
        return issuer

    async def _lineage_key(self, ref: res.TrainingRef, found: dict[tuple[str, str], Object]) -> None:
        """Created once and never rotated: the key signs one hash chain for the training's life."""
        name = res.lineage_secret_name(ref.name)
        if (ref.namespace, name) in found:
            return
        data = {res.LINEAGE_KEY_FILE: base64.b64encode(new_signing_key_pem()).decode()}
        await self.kube.create(res.secret(ref, name, ref.namespace, "lineage", "Opaque", data))

    def _controller_bundle(
        self, ref: res.TrainingRef, issuer: Issuer, lifetime: datetime.timedelta
    ) -> Bundle:
        key = (ref.namespace, ref.name)
        identity = Identity(ref.namespace, ref.name, "controller")
        bundle = self._controller.get(key)
        if renewal_reason(bundle, identity, issuer.trust_pem) is not None:
            bundle = self._controller[key] = issuer.issue(identity, lifetime)
        assert bundle is not None
        return bundle

    async def _write(self, obj: Object, existing: Object | None) -> None:
        if existing is None:
            await self.kube.create(obj)
            return
        meta = dict(obj["metadata"])
        meta["resourceVersion"] = existing["metadata"]["resourceVersion"]
        await self.kube.request(
            "PUT", path("Secret", meta["namespace"], meta["name"]), obj | {"metadata": meta}
        )


def _bundle_of(secret: Object | None) -> Bundle | None:
    if secret is None:
        return None
    try:
        return Bundle.from_secret_data(dict(secret.get("data") or {}))
    except IssuerError:
        return None


def fingerprint(bundle: Bundle) -> str:
    """Identifies a controller bundle: a new one means a new gRPC channel."""
    return hashlib.sha256(bundle.cert_pem).hexdigest()[:16]
