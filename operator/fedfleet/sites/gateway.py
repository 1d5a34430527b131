"""The hub's site gateway: a gRPC service a site's agent dials (the hub dials nothing).

`Enroll` spends a one-time join token on a certificate for the agent's own key; `Connect` is
the agent's one stream, authenticated by that certificate: the hub sends the site's work
(`RemoteSites`), the agent sends its state, and the gateway writes the site's accounting into
its FederationSite status. A deleted or suspended site's stream is closed (`revoke`), and a
certificate other than the one the site's last enrolment bought is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes.client.exceptions import ApiException

from fedfleet import vocabulary as vocab
from fedfleet.controller import metrics
from fedfleet.controller.kube import Kube, path
from fedfleet.identity.ca import Issuer, IssuerError
from fedfleet.logs import get_logger
from fedfleet.sites import enrolment as enrol
from fedfleet.sites import wire
from fedfleet.sites.fleet import RemoteSites, Site
from fedfleet.text import shorten
from fedfleet.v1 import site_gateway_pb2 as pb
from fedfleet.v1 import site_gateway_pb2_grpc as pb_grpc

Object = dict[str, Any]
GATEWAY_URI = "spiffe://fedfleet.io/site-gateway"
log = get_logger(component="site-gateway")


@dataclass(frozen=True)
class GatewaySettings:
    heartbeat_timeout_seconds: float = 30.0  # a stream silent this long is closed
    grace_seconds: float = 10.0  # a dropped site shows Connected=False after this
    heartbeat_write_seconds: float = 30.0  # status.lastHeartbeat written at most this often
    orphan_check_seconds: float = 30.0  # a reported training no pass claimed this long is looked up
    token_ttl: datetime.timedelta = enrol.TOKEN_TTL


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def load_or_create_ca(kube: Kube, namespace: str) -> Issuer:
    """The gateway's CA (Secret `fedfleet-site-gateway-ca` in the operator's namespace); made once."""
    found = await kube.get("Secret", namespace, enrol.GATEWAY_CA_SECRET)
    if found is None:
        ca = Issuer.generate("fedfleet site gateway CA", datetime.timedelta(days=3650))
        bundle = ca.as_bundle()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": enrol.GATEWAY_CA_SECRET,
                "namespace": namespace,
                "labels": {vocab.LABEL_NAME: "fedfleet", vocab.LABEL_COMPONENT: "site-gateway"},
            },
            "data": bundle.secret_data(),
        }
        found, _ = await kube.create(secret)  # another replica may have made it first: theirs wins
    data = found.get("data") or {}
    return Issuer.from_pem(base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]))


def server_credentials(ca: Issuer, names: tuple[str, ...], clients: bool) -> grpc.ServerCredentials:
    """The gateway's certificate (issued in memory by its CA). `clients`: mTLS, the handshake
    refuses a caller without a certificate of the gateway CA (the `Connect` port); else server
    TLS only (the enrolment port: the agent has no certificate yet, its token proves it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    lifetime = datetime.timedelta(days=365)
    cert = ca.sign(
        key.public_key(),
        GATEWAY_URI,
        enrol.GATEWAY_SERVER_NAME,
        lifetime,
        (enrol.GATEWAY_SERVER_NAME, *names),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return grpc.ssl_server_credentials(
        [(key_pem, cert)], root_certificates=ca.cert_pem, require_client_auth=clients
    )


class SiteGateway(pb_grpc.SiteGatewayServicer):
    def __init__(
        self, kube: Kube, sites: RemoteSites, ca: Issuer, settings: GatewaySettings | None = None
    ) -> None:
        self.kube = kube
        self.sites = sites
        self.ca = ca
        self.settings = settings or GatewaySettings()
        self._streams: dict[tuple[str, str], int] = {}  # the site's current stream (a newer one wins)
        self._written: dict[tuple[str, str], Object] = {}
        self._checking: dict[tuple[tuple[str, str], tuple[str, str]], asyncio.Task[None]] = {}

    # -- enrolment ---------------------------------------------------------------------------
    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnrollReply:
        try:
            return await self._enroll(request)
        except Refused as err:
            log.warning("site.enrol_refused", code=err.code.name, reason=str(err))
            await context.abort(err.code, str(err))
            raise  # abort raises; this is for the type checker

    async def _enroll(self, request: pb.EnrollRequest) -> pb.EnrollReply:
        if len(request.csr_pem) > wire.MAX_PEM_BYTES:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"the CSR is larger than {wire.MAX_PEM_BYTES} bytes"
            )
        try:
            token = enrol.parse_token(request.token)
        except enrol.EnrolmentError as err:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(err)) from None
        site = token.site
        await self._site_object(site)
        secret_name = enrol.join_secret_name(site.name)
        secret = await self.kube.get("Secret", site.namespace, secret_name)
        if secret is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"no join token was issued for site {site}")
        try:
            record = enrol.JoinRecord.from_data(dict(secret.get("data") or {}))
            record.check(token, _now())
            cert = enrol.sign_agent(self.ca, site, request.csr_pem)
        except enrol.EnrolmentError as err:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(err)) from None
        except IssuerError as err:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"CSR: {err}") from None
        spent = enrol.JoinRecord(record.token_sha256, record.expires, _stamp(_now()), enrol.fingerprint(cert))
        meta = dict(secret["metadata"])
        try:  # resourceVersion: of two callers with the same token, one wins
            await self.kube.request(
                "PUT",
                path("Secret", site.namespace, secret_name),
                secret | {"metadata": meta, "data": spent.data()},
            )
        except ApiException as err:
            if err.status == 409:
                raise Refused(
                    grpc.StatusCode.UNAUTHENTICATED, f"the join token for site {site} was already used"
                ) from None
            raise
        await self._patch(site, {"enrolled": _stamp(_now())})
        self.sites.revoke(site, "the site enrolled again")  # an agent with the old certificate goes
        log.info("site.enrolled", site=str(site), fingerprint=spent.agent_sha256[:16])
        return pb.EnrollReply(certificate_pem=cert, ca_pem=self.ca.trust_pem)

    async def _site_object(self, site: enrol.SiteName) -> Object:
        found = await self.kube.get(vocab.SITE, site.namespace, site.name)
        if found is None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"no FederationSite {site} at the hub")
        spec = found.get("spec") or {}
        if not spec.get("remote"):
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION, f"FederationSite {site} is not remote (spec.remote)"
            )
        if spec.get("suspended"):
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"FederationSite {site} is suspended")
        return found

    # -- the stream ----------------------------------------------------------------------------
    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        try:
            site = await self._authenticate(context)
            first = await asyncio.wait_for(anext(request_iterator), self.settings.heartbeat_timeout_seconds)
            if first.WhichOneof("kind") != "hello":
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the first message of a stream is a hello")
            if first.hello.site != site.name:
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the certificate is site {site}'s; it cannot connect as "
                    f"site {shorten(repr(first.hello.site))}",
                )
        except (Refused, enrol.EnrolmentError) as err:
            code = err.code if isinstance(err, Refused) else grpc.StatusCode.UNAUTHENTICATED
            log.warning("site.connect_refused", code=code.name, reason=str(err))
            await context.abort(code, str(err))
            return
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello")
            return
        await self._serve(site, first.hello, request_iterator, context)

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> enrol.SiteName:
        pems = list(context.auth_context().get("x509_pem_cert", []))
        if not pems:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "Connect needs the agent's certificate (enrol first)"
            )
        site = enrol.agent_of(x509.load_pem_x509_certificate(pems[0]))
        await self._site_object(site)
        secret = await self.kube.get("Secret", site.namespace, enrol.join_secret_name(site.name))
        record = enrol.JoinRecord.from_data(dict((secret or {}).get("data") or {})) if secret else None
        if record is None or record.agent_sha256 != enrol.fingerprint(pems[0]):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this certificate of site {site} was replaced by a later enrolment or revoked",
            )
        return site

    async def _serve(
        self,
        name: enrol.SiteName,
        hello: pb.SiteHello,
        requests: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        key = (name.namespace, name.name)
        stream = self._streams[key] = self._streams.get(key, 0) + 1
        site = self.sites.site(name)
        site.revoked = ""
        site.connected, site.agent_version = True, shorten(hello.agent_version, 40)
        site.last_heartbeat = _now()
        log.info("site.connected", site=str(name), agent_version=site.agent_version)
        reader = asyncio.create_task(self._read(site, requests))
        try:
            await self._write_status(site, force=True)
            site.changed.set()  # the whole work, first thing
            while not reader.done() and self._streams.get(key) == stream:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(site.changed.wait(), 1.0)
                if site.revoked:
                    await context.write(pb.HubMessage(revoked=pb.SiteRevoked(reason=site.revoked)))
                    log.info("site.revoked", site=str(name), reason=site.revoked)
                    break
                if site.changed.is_set():
                    site.changed.clear()
                    work = site.work()
                    wire.check_work(work)
                    await context.write(pb.HubMessage(work=work))
                assert site.last_heartbeat is not None
                if (_now() - site.last_heartbeat).total_seconds() > self.settings.heartbeat_timeout_seconds:
                    log.warning("site.silent", site=str(name))
                    break
                await self._write_status(site)
            if (
                reader.done()
                and (error := reader.exception()) is not None
                and isinstance(error, wire.WireError)
            ):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        finally:
            reader.cancel()
            if self._streams.get(key) == stream:
                site.connected = False
                log.info("site.disconnected", site=str(name))
                asyncio.get_running_loop().create_task(self._after_grace(site, key, stream))

    async def _read(self, site: Site, requests: AsyncIterator[pb.AgentMessage]) -> None:
        async for message in requests:
            site.last_heartbeat = _now()
            kind = message.WhichOneof("kind")
            if kind == "state":
                wire.check_state(message.state)
                self.sites.report(site, message.state)
                for training in self.sites.unclaimed(site):
                    self._check_orphan(site, training)

    def _check_orphan(self, site: Site, training: tuple[str, str]) -> None:
        """A site runs pods of a training no reconcile pass claims: one that ended or was deleted
        while this operator was away (its end was told to no one). After a settling time (a
        restarted operator's first passes claim the live ones), the hub's API decides: gone or
        final, and the site is told to remove them. Never on a guess: an API error decides nothing."""
        key = ((site.name.namespace, site.name.name), training)
        if key in self._checking:
            return

        async def check() -> None:
            try:
                await asyncio.sleep(self.settings.orphan_check_seconds)
                if training not in self.sites.unclaimed(site):
                    return
                found = await self.kube.get(vocab.TRAINING, *training)
                phase = ((found or {}).get("status") or {}).get("phase")
                if found is None or phase in vocab.FINAL_PHASES:
                    log.info("site.orphans_ended", site=str(site.name), training="/".join(training))
                    self.sites.end(site, training)
            except ApiException as err:
                log.warning("site.orphan_check_failed", site=str(site.name), status=err.status)
            finally:
                self._checking.pop(key, None)

        self._checking[key] = asyncio.get_running_loop().create_task(check())

    async def _after_grace(self, site: Site, key: tuple[str, str], stream: int) -> None:
        await asyncio.sleep(self.settings.grace_seconds)
        if self._streams.get(key) == stream and not site.connected:
            await self._write_status(site, force=True)

    async def _write_status(self, site: Site, force: bool = False) -> None:
        """Accounting into the FederationSite's status, only when a figure changed (and the
        heartbeat at most every `heartbeat_write_seconds`)."""
        key = (site.name.namespace, site.name.name)
        status: Object = {
            "connected": site.connected,
            "agentVersion": site.agent_version,
            "clientsRunning": site.running(),
            "gpusInUse": site.gpus_in_use,
            "refusedWork": site.refused(),
        }
        label = str(site.name)
        metrics.SITE_CONNECTED.labels(site=label).set(1 if site.connected else 0)
        metrics.SITE_CLIENTS_RUNNING.labels(site=label).set(status["clientsRunning"])
        metrics.SITE_GPUS_IN_USE.labels(site=label).set(status["gpusInUse"])
        metrics.SITE_REFUSED_WORK.labels(site=label).set(status["refusedWork"])
        if site.last_heartbeat is not None:
            metrics.SITE_HEARTBEAT.labels(site=label).set(site.last_heartbeat.timestamp())
        last = self._written.get(key)
        beat = site.last_heartbeat
        stale = (
            last is None or time.monotonic() - last.get("_at", 0.0) > self.settings.heartbeat_write_seconds
        )
        if not force and last is not None and {k: last.get(k) for k in status} == status and not stale:
            return
        if beat is not None:
            status["lastHeartbeat"] = _stamp(beat)
        try:
            await self._patch(site.name, status)
        except ApiException as err:
            log.warning("site.status_failed", site=str(site.name), status=err.status)
            return
        self._written[key] = status | {"_at": time.monotonic()}

    async def _patch(self, site: enrol.SiteName, status: Object) -> None:
        with contextlib.suppress(ApiException):
            await self.kube.patch_status(vocab.SITE, site.namespace, site.name, status)

    # -- revocation ----------------------------------------------------------------------------
    def site_event(self, body: Object, deleted: bool) -> None:
        """A FederationSite changed at the hub: a deleted or suspended one loses its stream."""
        meta = body.get("metadata") or {}
        name = enrol.SiteName(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        spec = body.get("spec") or {}
        if deleted:
            self.sites.revoke(name, f"FederationSite {name} was deleted")
        elif spec.get("suspended"):
            self.sites.revoke(name, f"FederationSite {name} is suspended")
        elif not spec.get("remote"):
            self.sites.revoke(name, f"FederationSite {name} is no longer remote")


async def serve(
    gateway: SiteGateway, port: int, enrol_port: int, names: tuple[str, ...], host: str = "0.0.0.0"
) -> grpc.aio.Server:
    """`port`: mTLS (agents' streams); `enrol_port`: server TLS (join tokens). gRPC's Python API
    cannot ask for an optional client certificate, hence two ports of one server."""
    options = [
        ("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    server = grpc.aio.server(options=options)
    pb_grpc.add_SiteGatewayServicer_to_server(gateway, server)
    bound = server.add_secure_port(f"{host}:{port}", server_credentials(gateway.ca, names, clients=True))
    enrolling = server.add_secure_port(
        f"{host}:{enrol_port}", server_credentials(gateway.ca, names, clients=False)
    )
    await server.start()
    log.info("site_gateway.serving", port=bound, enrol_port=enrolling, names=list(names))
    return server
