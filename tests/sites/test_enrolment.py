"""Enrolment and the stream's door at a real hub (test API server, operator process with its
site gateway), called over real gRPC as an agent would: a join token buys one certificate, once,
before it expires; a certificate acts only as its own site, only until the site re-enrols, is
suspended or deleted."""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from fedfleet.identity.ca import Issuer
from fedfleet.identity.names import Identity
from fedfleet.sites import enrolment as enrol
from fedfleet.v1 import site_gateway_pb2 as pb
from fedfleet.v1 import site_gateway_pb2_grpc as pb_grpc

from tests.controller.cluster import wait_for
from tests.sites.harness import Federation, remote_site, start_federation

NAME = enrol.GATEWAY_SERVER_NAME


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Federation]:
    fed = start_federation(tmp_path)
    try:
        yield fed
    finally:
        fed.close()


def enroll(hub: Federation, ca: str, token: str) -> tuple[bytes, bytes]:
    """(certificate, key) for a key made here, as the agent does; raises the gateway's refusal."""
    key, csr = enrol.new_key_and_csr()

    async def call() -> pb.EnrollReply:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.encode())
        options = [("grpc.ssl_target_name_override", NAME)]
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{hub.gateway_port + 1}", credentials, options
        ) as channel:
            return await pb_grpc.SiteGatewayStub(channel).Enroll(
                pb.EnrollRequest(token=token, csr_pem=csr), timeout=20
            )

    reply = asyncio.run(call())
    return reply.certificate_pem, key


def connect(
    hub: Federation, ca: str, cert: bytes, key: bytes, site: str, seconds: float = 8
) -> list[pb.HubMessage]:
    """Open the stream as `site`, return what the hub sent within `seconds` (raises its refusal)."""

    async def call() -> list[pb.HubMessage]:
        credentials = grpc.ssl_channel_credentials(ca.encode(), key, cert)
        options = [("grpc.ssl_target_name_override", NAME)]
        got: list[pb.HubMessage] = []
        async with grpc.aio.secure_channel(f"127.0.0.1:{hub.gateway_port}", credentials, options) as channel:
            hello = pb.AgentMessage(hello=pb.SiteHello(agent_version="test", site=site))

            async def outgoing():  # type: ignore[no-untyped-def]
                yield hello
                while True:
                    await asyncio.sleep(0.5)
                    yield pb.AgentMessage(heartbeat=pb.SiteHeartbeat())

            stream = pb_grpc.SiteGatewayStub(channel).Connect(outgoing())
            try:
                async with asyncio.timeout(seconds):
                    async for message in stream:
                        got.append(message)
                        if message.WhichOneof("kind") == "revoked":
                            break
            except TimeoutError:
                stream.cancel()
        return got

    return asyncio.run(call())


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        call()  # type: ignore[operator]
    return refused.value.code(), refused.value.details() or ""


def test_a_join_token_buys_one_site_bound_certificate_once_before_it_expires(hub: Federation) -> None:
    hub.cluster.apply(remote_site("site-a"))
    token, fingerprint, ca = hub.join_token("site-a")
    assert enrol.fingerprint(ca.encode()) == fingerprint
    stored = hub.cluster.items("Secret", selector="fedfleet.io/site=site-a")[0]
    assert token.split(":")[-1] not in str(stored)  # only its hash is kept at the hub

    cert, key = enroll(hub, ca, token)
    assert enrol.key_matches(cert, key)
    assert enrol.agent_of(x509.load_pem_x509_certificate(cert)) == enrol.SiteName("default", "site-a")

    code, details = code_of(lambda: enroll(hub, ca, token))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "already used" in details
    code, details = code_of(lambda: enroll(hub, ca, token[:-4] + "AAAA"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not the one last issued" in details
    assert "AAAA" not in details  # nothing the caller sent is echoed

    token, _, _ = hub.join_token("site-a")  # a fresh one, then an hour passes
    secret = hub.cluster.items("Secret", selector="fedfleet.io/site=site-a")[0]
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).isoformat()
    secret["data"]["expires"] = base64.b64encode(past.encode()).decode()
    hub.cluster.core.replace_namespaced_secret(secret["metadata"]["name"], "default", secret)
    code, details = code_of(lambda: enroll(hub, ca, token))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in details

    hub.cluster.apply(remote_site("site-b"))
    code, details = code_of(lambda: enroll(hub, ca, token.replace(":site-a:", ":site-b:")))
    assert (
        code == grpc.StatusCode.UNAUTHENTICATED
        and "no join token was issued for site default/site-b" in details
    )


def test_a_certificate_acts_only_as_its_site_until_re_enrolment_suspension_or_deletion(
    hub: Federation,
) -> None:
    for name in ("site-a", "site-b"):
        hub.cluster.apply(remote_site(name))
    token_a, _, ca = hub.join_token("site-a")
    cert_a, key_a = enroll(hub, ca, token_a)

    got = connect(hub, ca, cert_a, key_a, "site-a", seconds=2)
    assert got and got[0].WhichOneof("kind") == "work"
    wait_for(lambda: hub.site_status("site-a").get("agentVersion") == "test", 20, "site-a's status")

    code, details = code_of(lambda: connect(hub, ca, cert_a, key_a, "site-b"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot connect as site" in details

    stranger = Issuer.generate("another CA", datetime.timedelta(days=1)).issue(
        Identity("default", "t", "controller"), datetime.timedelta(hours=1)
    )
    code, _ = code_of(lambda: connect(hub, ca, stranger.cert_pem, stranger.key_pem, "site-a"))
    assert code == grpc.StatusCode.UNAVAILABLE  # the handshake refuses a certificate of another CA

    async def suspend_soon() -> None:
        await asyncio.sleep(2)
        await asyncio.to_thread(
            hub.cluster.custom.patch_namespaced_custom_object,
            "fedfleet.io",
            "v1alpha1",
            "default",
            "federationsites",
            "site-a",
            {"spec": {"suspended": True}},
        )

    async def watch_and_suspend() -> list[pb.HubMessage]:
        task = asyncio.create_task(suspend_soon())
        got = await asyncio.to_thread(connect, hub, ca, cert_a, key_a, "site-a", 12)
        await task
        return got

    got = asyncio.run(watch_and_suspend())
    assert got[-1].WhichOneof("kind") == "revoked" and "suspended" in got[-1].revoked.reason
    code, details = code_of(lambda: connect(hub, ca, cert_a, key_a, "site-a"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "suspended" in details

    token_b, _, _ = hub.join_token("site-b")
    cert_b, key_b = enroll(hub, ca, token_b)
    token_b, _, _ = hub.join_token("site-b")
    enroll(hub, ca, token_b)  # the site enrolled again: the first certificate is void
    code, details = code_of(lambda: connect(hub, ca, cert_b, key_b, "site-b"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "replaced by a later enrolment" in details
