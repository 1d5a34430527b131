"""A training's key material as Secrets: its CA (or the user's issuer), the aggregator's server
certificate, one client certificate per site client (in the site's namespace), the lineage
signing key, and the controller's own certificate (kept in memory, never stored).

A check lists the training's Secrets once (by label, in the training's namespace and each site's:
never cluster-wide, so a namespaced install reads no other Secret) and re-issues only what
`rotation.renewal_reason` says must go: missing, running out, under another CA, other names.
Lifetimes are hours to weeks, so after a complete check the next one waits `check_seconds`
(OperatorSettings.certificate_check_seconds, default 60) unless the sites or TLS settings changed.

A generated CA is rotated with overlap (`rotation.advance`): every pod's `ca.crt` holds the
old and the new CA until the leaves of the new one have reached every pod, each step waiting
`settle_seconds` for the kubelet to refresh Secret volumes; a changed bundle alone rewrites
`ca.crt` and keeps the leaf, so nothing is re-issued before it has to be.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.controller import resources as res
from fedfleet.controller.kube import Kube, path
from fedfleet.identity.ca import Bundle, Issuer, IssuerError
from fedfleet.identity.names import Identity, aggregator_dns_names
from fedfleet.identity.rotation import TrustState, advance, current_bundle, renewal_reason
from fedfleet.logs import get_logger
from fedfleet.provenance.signing import new_signing_key_pem

Object = dict[str, Any]
TLS_TYPE = "kubernetes.io/tls"
CHECK_SECONDS = 60.0
# How long a changed Secret takes to reach every pod's volume: the kubelet's sync period (1 min by
# default) plus its Secret cache, with a wide margin. Each step of a CA rotation waits this long.
TRUST_SETTLE_SECONDS = 300.0
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
    def __init__(
        self,
        kube: Kube,
        check_seconds: float = CHECK_SECONDS,
        settle_seconds: float = TRUST_SETTLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.check_seconds = check_seconds
        self.settle_seconds = settle_seconds
        self.clock = clock
        self._controller: dict[tuple[str, str], Bundle] = {}
        self._checked: dict[tuple[str, str], tuple[float, object]] = {}
        self._issuers: dict[tuple[str, str], Issuer] = {}

    async def ensure(
        self, ref: res.TrainingRef, spec: FederatedTrainingSpec, sites: list[res.SiteRef]
    ) -> Bundle:
        """Make every Secret the pods mount current; returns the controller's client bundle."""
        if not spec.tls.enabled:
            raise CertificateError(
                "spec.tls.enabled: false is for `fedfleet local run` only; a cluster always uses mTLS"
            )
        key = (ref.namespace, ref.name)
        plan = (
            ref.uid,
            spec.tls,
            spec.clients_per_site,
            spec.aggregator.external_address,
            tuple((s.name, s.namespace, s.spec.remote) for s in sites),
        )
        local = [s for s in sites if not s.spec.remote]  # a remote site's clients send CSRs (sign_client)
        last = self._checked.get(key)
        if last and last[1] == plan and time.monotonic() - last[0] < self.check_seconds:
            return self._controller[key]
        found = {
            (s["metadata"]["namespace"], s["metadata"]["name"]): s
            for namespace in sorted({ref.namespace, *(s.namespace for s in local)})
            for s in await self.kube.list("Secret", namespace, f"{res.GROUP}/training={ref.name}")
        }
        issuer = self._issuers[key] = await self._issuer(ref, spec, found)
        lifetime = datetime.timedelta(hours=spec.tls.certificate_lifetime_hours)
        wanted = [
            Wanted(
                res.tls_secret_name(ref.name, "aggregator"),
                ref.namespace,
                Identity(ref.namespace, ref.name, "aggregator"),
                tuple(aggregator_dns_names(ref.name, ref.namespace))
                + tuple(filter(None, [res.external_host(spec)])),
            )
        ]
        for site in local:
            for index in range(spec.clients_per_site):
                cid = res.client_id(site.name, index)
                identity = Identity.of_client(ref.namespace, ref.name, site.name, cid)
                wanted.append(Wanted(res.tls_secret_name(ref.name, cid), site.namespace, identity))
        for want in wanted:
            existing = found.get((want.namespace, want.secret))
            current = _bundle_of(existing)
            fresh = current_bundle(current, issuer, want.identity, lifetime, want.dns_names)
            if fresh is not current:
                component = "aggregator" if want.identity.role == "aggregator" else "client"
                obj = res.secret(ref, want.secret, want.namespace, component, TLS_TYPE, fresh.secret_data())
                await self._write(obj, existing)
                log.info(
                    "certificate.issued"
                    if current is None or fresh.cert_pem != current.cert_pem
                    else "certificate.trust_updated",
                    training=ref.name,
                    secret=want.secret,
                    namespace=want.namespace,
                    identity=want.identity.uri,
                    reason=renewal_reason(current, want.identity, issuer.cert, want.dns_names)
                    or "trust bundle changed",
                )
        await self._lineage_key(ref, found)
        bundle = self._controller_bundle(ref, issuer, lifetime)
        self._checked[key] = (time.monotonic(), plan)
        return bundle

    def sign_client(
        self,
        ref: res.TrainingRef,
        spec: FederatedTrainingSpec,
        site: res.SiteRef,
        client: str,
        csr_pem: bytes,
    ) -> tuple[bytes, bytes]:
        """A remote site's client certificate from the site's CSR (its key never leaves the site):
        the identity is the hub's choice, one of that site's clients of this training."""
        if client not in {res.client_id(site.name, i) for i in range(spec.clients_per_site)}:
            raise CertificateError(f"{client} is not a client of site {site.name} in this training")
        issuer = self._issuers[(ref.namespace, ref.name)]  # `ensure` ran first this pass
        identity = Identity.of_client(ref.namespace, ref.name, site.name, client)
        lifetime = datetime.timedelta(hours=spec.tls.certificate_lifetime_hours)
        try:
            cert = issuer.sign_request(csr_pem, identity.uri, identity.common_name, lifetime)
        except IssuerError as err:
            raise CertificateError(str(err)) from None
        log.info("certificate.signed", training=ref.name, site=site.name, identity=identity.uri)
        return cert, issuer.trust_pem

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
        hours = max(3 * spec.tls.certificate_lifetime_hours, 24 * 365)

        def new_ca() -> Issuer:
            return Issuer.generate(f"{ref.namespace}/{ref.name} fedfleet CA", datetime.timedelta(hours=hours))

        now = self.clock()
        state: TrustState | None = None
        reason: str | None
        if existing is not None:
            try:
                state = TrustState.from_secret_data(dict(existing.get("data") or {}))
            except IssuerError as err:
                log.warning("ca.unreadable", training=ref.name, secret=secret_name, reason=str(err))
        if state is None:
            state, reason = TrustState(new_ca(), changed_at=now), "unreadable" if existing else "missing"
        else:
            state, reason = advance(state, now, self.settle_seconds, new_ca)
        if reason is not None:
            obj = res.secret(ref, secret_name, ref.namespace, "ca", TLS_TYPE, state.secret_data())
            await self._write(obj, existing)
            log.info("ca.changed", training=ref.name, secret=secret_name, reason=reason)
        return state.signer

    async def _lineage_key(self, ref: res.TrainingRef, found: dict[tuple[str, str], Object]) -> None:
        """Created once and never rotated: the key signs one hash chain for the training's life,
        and is retained when the training is deleted (it verifies the models already released)."""
        name = res.lineage_secret_name(ref.name)
        if (ref.namespace, name) in found:
            return
        data = {res.LINEAGE_KEY_FILE: base64.b64encode(new_signing_key_pem()).decode()}
        await self.kube.create(res.secret(ref, name, ref.namespace, "lineage", "Opaque", data, retained=True))

    def _controller_bundle(
        self, ref: res.TrainingRef, issuer: Issuer, lifetime: datetime.timedelta
    ) -> Bundle:
        key = (ref.namespace, ref.name)
        identity = Identity(ref.namespace, ref.name, "controller")
        bundle = self._controller[key] = current_bundle(self._controller.get(key), issuer, identity, lifetime)
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
    """Identifies a controller bundle (its leaf and what it trusts): a new one, a new channel."""
    return hashlib.sha256(bundle.cert_pem + bundle.ca_pem).hexdigest()[:16]
