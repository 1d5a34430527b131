"""`fedfleet site-agent`: runs in the site's own cluster, with the site's own ServiceAccount.

It dials the hub's site gateway (the only connection it makes out; nothing dials in), enrols
once with the join token (its key is generated here and never leaves), then holds one stream:
the hub's work arrives whole, the agent makes the site's client pods match it with the same pod
builder the hub uses for namespace sites (`controller.resources.client_pod`, under the site's
own placement), refuses what its policy does not allow, and streams every client's state back.
A dropped stream is dialled again with backoff; running clients keep training meanwhile, and a
restarted agent adopts its pods by their deterministic names and attempt annotations.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import tenacity
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from fedfleet import __version__
from fedfleet import vocabulary as vocab
from fedfleet.api.training import FederatedTraining
from fedfleet.controller import resources as res
from fedfleet.controller.client_pods import exit_code, termination_message
from fedfleet.controller.kube import Kube, path
from fedfleet.controller.observed import pod_summary
from fedfleet.logs import get_logger
from fedfleet.sites import enrolment as enrol
from fedfleet.sites import wire
from fedfleet.sites.policy import AgentConfig, refusal
from fedfleet.v1 import site_gateway_pb2 as pb
from fedfleet.v1 import site_gateway_pb2_grpc as pb_grpc

Object = dict[str, Any]
TLS_TYPE = "kubernetes.io/tls"
ClientKey = tuple[str, str, str]
HUB_NAMESPACE = f"{vocab.GROUP}/hub-namespace"  # the training's namespace at the hub
INDEX = f"{vocab.GROUP}/index"  # the client's index and data partition, as the work gave them
PARTITION = f"{vocab.GROUP}/partition"
log = get_logger(component="site-agent")


class AgentError(Exception):
    """The agent cannot run as configured: the message says what to fix."""


class Revoked(Exception):
    pass


@dataclass
class Identity:
    cert: bytes
    key: bytes
    ca: bytes

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


@dataclass
class Session:
    """What one stream knows: the hub's latest work, and the CSRs not yet sent on it."""

    work: pb.SiteWork = field(default_factory=pb.SiteWork)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    unsent: dict[ClientKey, bytes] = field(default_factory=dict)


class SiteAgent:
    def __init__(self, config: AgentConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        self.site = config.site_ref()
        self._keys: dict[ClientKey, bytes] = {}  # client keys awaiting their certificate (never sent)
        self._refused: dict[ClientKey, tuple[str, pb.SiteClientWork]] = {}  # why, and the work refused
        self._manifests: dict[str, FederatedTraining | str] = {}  # sha256 -> parsed, or why not

    # -- trust -------------------------------------------------------------------------------
    def hub_ca(self) -> bytes:
        pem = self.config.hub.ca_certificate.encode()
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise AgentError("hub.caCertificate is not a PEM certificate") from None
        found = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        if found != self.config.hub.ca_fingerprint:
            raise AgentError(
                f"hub.caCertificate has fingerprint {found}, not hub.caFingerprint "
                f"{self.config.hub.ca_fingerprint}: ask the hub admin for the right pair"
            )
        return pem

    async def identity(self) -> Identity:
        """The agent's certificate: from its Secret, or enrolled now with the join token."""
        ca = self.hub_ca()
        stored = await self.kube.get("Secret", self.config.namespace, self.config.identity_secret)
        if stored is not None:
            data = {k: base64.b64decode(v) for k, v in (stored.get("data") or {}).items()}
            if {"tls.crt", "tls.key"} <= data.keys() and enrol.key_matches(data["tls.crt"], data["tls.key"]):
                return Identity(data["tls.crt"], data["tls.key"], ca)
        try:
            with open(self.config.token_file) as handle:
                token = handle.read(512).strip()
        except OSError as err:
            raise AgentError(
                f"no identity Secret and no join token at {self.config.token_file}: {err.strerror}"
            ) from None
        key, csr = enrol.new_key_and_csr()
        channel = grpc.aio.secure_channel(
            self.config.hub.enrolment(),
            grpc.ssl_channel_credentials(root_certificates=ca),
            options=[("grpc.ssl_target_name_override", self.config.hub.server_name)],
        )
        try:
            reply = await pb_grpc.SiteGatewayStub(channel).Enroll(
                pb.EnrollRequest(token=token, csr_pem=csr), timeout=30
            )
        finally:
            await channel.close(None)
        if not enrol.key_matches(reply.certificate_pem, key):
            raise AgentError("the hub answered the enrolment with a certificate for another key")
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": TLS_TYPE,
            "metadata": {
                "name": self.config.identity_secret,
                "namespace": self.config.namespace,
                "labels": {vocab.LABEL_NAME: "fedfleet", vocab.LABEL_COMPONENT: "site-agent"},
            },
            "data": {
                k: base64.b64encode(v).decode()
                for k, v in (("tls.crt", reply.certificate_pem), ("tls.key", key), ("ca.crt", ca))
            },
        }
        if stored is not None:
            await self.kube.delete("Secret", self.config.namespace, self.config.identity_secret)
        await self.kube.create(secret)
        log.info(
            "agent.enrolled", site=self.config.site, fingerprint=enrol.fingerprint(reply.certificate_pem)[:16]
        )
        return Identity(reply.certificate_pem, key, ca)

    # -- the stream ----------------------------------------------------------------------------
    async def run(self) -> None:
        identity = await self.identity()

        def logged(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning(
                "agent.reconnecting",
                attempt=state.attempt_number,
                wait=round(state.upcoming_sleep, 2),
                reason=_reason(error),
            )

        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_exponential_jitter(initial=0.2, max=10.0),
            stop=tenacity.stop_after_delay(self.config.give_up_seconds),
            retry=tenacity.retry_if_exception_type((grpc.aio.AioRpcError, Revoked, OSError, TimeoutError)),
            before_sleep=logged,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.session(identity)

    async def session(self, identity: Identity) -> None:
        """One stream, until it drops (raises, so the caller dials again)."""
        session = Session()
        channel = grpc.aio.secure_channel(
            self.config.hub.address,
            identity.credentials(),
            options=[
                ("grpc.ssl_target_name_override", self.config.hub.server_name),
                ("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 20_000),
            ],
        )
        outbox: asyncio.Queue[pb.AgentMessage] = asyncio.Queue(maxsize=64)
        await outbox.put(
            pb.AgentMessage(hello=pb.SiteHello(agent_version=__version__, site=self.config.site))
        )

        async def outgoing() -> AsyncIterator[pb.AgentMessage]:
            while True:
                yield await outbox.get()

        call = pb_grpc.SiteGatewayStub(channel).Connect(outgoing())
        tasks = [
            asyncio.create_task(self._receive(call, session)),
            asyncio.create_task(self._reconcile_loop(session, outbox)),
            asyncio.create_task(self._heartbeat(outbox)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the reason the stream ended
            raise Revoked("the hub ended the stream")
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()
            await channel.close(None)

    async def _receive(self, call: Any, session: Session) -> None:
        async for message in call:
            kind = message.WhichOneof("kind")
            if kind == "revoked":
                raise Revoked(f"the hub revoked this site: {message.revoked.reason[:200]}")
            if kind == "work":
                wire.check_work(message.work)
                if not session.work.trainings and not session.work.ended:
                    log.info("agent.connected", site=self.config.site)
                session.work = message.work
                session.changed.set()

    async def _heartbeat(self, outbox: asyncio.Queue[pb.AgentMessage]) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            await outbox.put(pb.AgentMessage(heartbeat=pb.SiteHeartbeat()))

    async def _reconcile_loop(self, session: Session, outbox: asyncio.Queue[pb.AgentMessage]) -> None:
        last: bytes | None = None  # the first state goes out even when empty: the hub waits for it
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), self.config.resync_seconds)
            session.changed.clear()
            state = await self.reconcile(session.work, session)
            encoded = state.SerializeToString(deterministic=True)
            if encoded != last or state.certificate_requests:
                await outbox.put(pb.AgentMessage(state=state))
                last = encoded

    # -- making the site match the work ------------------------------------------------------------
    async def reconcile(self, work: pb.SiteWork, session: Session) -> pb.SiteState:
        ns = self.config.namespace
        pods = {
            p["metadata"]["name"]: p
            for p in await self.kube.list(
                "Pod",
                ns,
                f"{vocab.LABEL_COMPONENT}={vocab.COMPONENT_CLIENT},{vocab.LABEL_SITE}={self.site.name}",
            )
        }
        secrets = {
            s["metadata"]["name"]: s
            for s in await self.kube.list("Secret", ns, f"{vocab.LABEL_SITE}={self.site.name}")
        }
        for ended in work.ended:
            await self._remove(ended.split("/", 1)[-1], pods)
        budget_clients, budget_gpus = self.config.policy.max_clients, self.config.policy.max_gpus
        gpus_each = self.site.spec.gpu.count
        previous, self._refused = self._refused, {}
        for training in work.trainings:
            spec_or_reason = self._parse(training.manifest_json)
            ref = res.TrainingRef(training.name, training.namespace, training.uid)
            wanted = {c.client_id: c for c in training.clients}
            for name, pod in list(pods.items()):  # clients the hub no longer wants, or another attempt
                labels = pod["metadata"].get("labels") or {}
                if labels.get(vocab.LABEL_TRAINING) != training.name:
                    continue
                want = wanted.get(labels.get(vocab.LABEL_CLIENT, ""))
                attempt = (pod["metadata"].get("annotations") or {}).get(vocab.ANNOTATION_ATTEMPT)
                if want is None:
                    continue  # not mentioned (a hub that restarted has not adopted it yet): left alone
                if want.attempt == 0 or str(want.attempt) != attempt:
                    await self.kube.delete("Pod", ns, name)
                    del pods[name]
            if isinstance(spec_or_reason, str):
                for c in training.clients:
                    self._refused[(training.namespace, training.name, c.client_id)] = (spec_or_reason, c)
                continue
            spec = spec_or_reason.spec
            reason = refusal(self.config.policy, spec)
            ready = False
            for client in training.clients:
                key = (training.namespace, training.name, client.client_id)
                pod_name = res.client_pod_name(training.name, client.client_id)
                if reason is not None:
                    self._refused[key] = (reason, client)
                    continue
                if client.attempt == 0 or client.given_up:
                    if client.given_up and pod_name in pods:
                        await self._mark_given_up(pods[pod_name])
                    continue
                if pod_name in pods:
                    budget_clients -= 1
                    budget_gpus -= gpus_each
                    continue
                if budget_clients < 1 or budget_gpus < gpus_each:
                    limits = (
                        f"maxClients {self.config.policy.max_clients} / maxGpus {self.config.policy.max_gpus}"
                    )
                    self._refused[key] = (f"site policy: {limits} reached at site {self.site.name}", client)
                    continue
                stored = secrets.get(res.tls_secret_name(ref.name, client.client_id))
                if not await self._certificate(ref, client, key, stored, session):
                    continue
                if not ready:
                    await self._manifest(ref, training.manifest_json)
                    ready = True
                pod = res.client_pod(
                    ref,
                    spec,
                    self.site,
                    client.index,
                    client.partition,
                    training.aggregator_address,
                    client.attempt,
                )
                pod["metadata"].pop("ownerReferences", None)  # the training lives at the hub, not here
                pod["metadata"]["annotations"] |= {
                    HUB_NAMESPACE: training.namespace,
                    INDEX: str(client.index),
                    PARTITION: str(client.partition),
                }
                created = await self.kube.ensure(pod)
                if created is not None:
                    pods[pod_name] = created
                    log.info(
                        "agent.client_started",
                        training=training.name,
                        client=client.client_id,
                        attempt=client.attempt,
                    )
                budget_clients -= 1
                budget_gpus -= gpus_each
        for key, (why, _) in self._refused.items():
            if previous.get(key, ("",))[0] != why:  # once per refusal, not per pass
                log.info("agent.work_refused", training=key[1], client=key[2], reason=why[:200])
        return self._state(pods, session)

    def _parse(self, manifest: bytes) -> FederatedTraining | str:
        digest = hashlib.sha256(manifest).hexdigest()
        if digest not in self._manifests:
            try:
                self._manifests[digest] = FederatedTraining.model_validate(json.loads(manifest))
            except (ValueError, ValidationError) as err:
                self._manifests[digest] = f"the hub sent a manifest this agent cannot read: {str(err)[:200]}"
        return self._manifests[digest]

    async def _certificate(
        self,
        ref: res.TrainingRef,
        client: pb.SiteClientWork,
        key: ClientKey,
        stored: Object | None,
        session: Session,
    ) -> bool:
        """Whether the client's TLS Secret is in place; makes it from the hub's answer to our CSR,
        or asks (a key made here, only its CSR sent)."""
        name = res.tls_secret_name(ref.name, client.client_id)
        data = {k: base64.b64decode(v) for k, v in ((stored or {}).get("data") or {}).items()}
        pending = self._keys.get(key)
        if (
            client.certificate_pem
            and pending is not None
            and enrol.key_matches(client.certificate_pem, pending)
        ):
            bundle = {"tls.crt": client.certificate_pem, "tls.key": pending, "ca.crt": client.ca_pem}
            secret = res.secret(
                ref,
                name,
                self.config.namespace,
                "client",
                TLS_TYPE,
                {k: base64.b64encode(v).decode() for k, v in bundle.items()},
            )
            secret["metadata"]["labels"][vocab.LABEL_SITE] = self.site.name
            secret["metadata"].pop("ownerReferences", None)
            if stored is not None:
                await self.kube.delete("Secret", self.config.namespace, name)
            await self.kube.create(secret)
            del self._keys[key]
            return True
        if stored is not None and "tls.key" in data:
            return True
        if pending is None:
            pending, csr = enrol.new_key_and_csr()
            self._keys[key] = pending
            session.unsent[key] = csr
        return False

    async def _manifest(self, ref: res.TrainingRef, manifest: bytes) -> None:
        config_map = res.manifest_config_map(ref, json.loads(manifest), self.config.namespace)
        config_map["metadata"].pop("ownerReferences", None)
        await self.kube.ensure(config_map)

    async def _mark_given_up(self, pod: Object) -> None:
        if (pod["metadata"].get("annotations") or {}).get(vocab.ANNOTATION_GIVEN_UP):
            return
        await self.kube.request(
            "PATCH",
            path("Pod", self.config.namespace, pod["metadata"]["name"]),
            {"metadata": {"annotations": {vocab.ANNOTATION_GIVEN_UP: "true"}}},
            content_type="application/merge-patch+json",
        )

    async def _remove(self, training: str, pods: dict[str, Object]) -> None:
        """An ended training: its pods, certificates and manifest go."""
        ns = self.config.namespace
        for name, pod in list(pods.items()):
            if (pod["metadata"].get("labels") or {}).get(vocab.LABEL_TRAINING) == training:
                await self.kube.delete("Pod", ns, name)
                del pods[name]
        for kind in ("Secret", "ConfigMap"):
            for obj in await self.kube.list(kind, ns, f"{vocab.LABEL_TRAINING}={training}"):
                await self.kube.delete(kind, ns, obj["metadata"]["name"])
        self._keys = {k: v for k, v in self._keys.items() if k[1] != training}

    def _state(self, pods: dict[str, Object], session: Session) -> pb.SiteState:
        clients: list[pb.SiteClientState] = []
        gpus = 0
        for pod in pods.values():
            summary = pod_summary(pod)
            annotations = pod["metadata"].get("annotations") or {}
            meta, status = summary["metadata"], summary["status"]
            labels = meta["labels"]
            phase = status["phase"]
            if phase == "Running":
                gpus += self.site.spec.gpu.count
            scheduled = next((c for c in status["conditions"] if c["status"] == "False"), None)
            finished = next(
                (
                    ((c.get("state") or {}).get("terminated") or {}).get("finishedAt")
                    for c in status["containerStatuses"]
                ),
                None,
            )
            clients.append(
                pb.SiteClientState(
                    training_namespace=meta["annotations"].get(HUB_NAMESPACE, ""),
                    training=labels.get(vocab.LABEL_TRAINING, ""),
                    client_id=labels.get(vocab.LABEL_CLIENT, ""),
                    attempt=int(meta["annotations"].get(vocab.ANNOTATION_ATTEMPT, "0")),
                    phase=phase if phase in wire.PHASES else "Pending",
                    exit_code=exit_code(pod) or 0,
                    message=(termination_message(pod) or (scheduled or {}).get("message", ""))[
                        : wire.MAX_MESSAGE
                    ],
                    scheduled="False" if scheduled else "",
                    created=meta.get("creationTimestamp") or "",
                    finished=finished or "",
                    given_up=bool(meta["annotations"].get(vocab.ANNOTATION_GIVEN_UP)),
                    index=int(annotations.get(INDEX, "0")),
                    partition=int(annotations.get(PARTITION, "0")),
                )
            )
        for (namespace, training, cid), (why, work) in sorted(self._refused.items()):
            clients.append(
                pb.SiteClientState(
                    training_namespace=namespace,
                    training=training,
                    client_id=cid,
                    attempt=work.attempt,
                    index=work.index,
                    partition=work.partition,
                    phase=wire.REFUSED,
                    exit_code=78,
                    message=why[: wire.MAX_MESSAGE],
                )
            )
        requests = [
            pb.CertificateRequest(training_namespace=k[0], training=k[1], client_id=k[2], csr_pem=csr)
            for k, csr in sorted(session.unsent.items())
        ][: wire.MAX_CLIENTS]
        session.unsent.clear()
        return pb.SiteState(clients=clients, certificate_requests=requests, gpus_in_use=gpus)


def _reason(error: BaseException | None) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {(error.details() or '')[:200]}"
    return str(error)[:200] if error else ""
