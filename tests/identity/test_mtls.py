"""mTLS and per-call authorisation over real gRPC: a real aggregator process on loopback, callers
presenting certificates issued by fedfleet.identity. Every refusal is logged and counted."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fedfleet.client.connection import AggregatorConnection
from fedfleet.identity.ca import Bundle, Issuer
from fedfleet.identity.files import TlsFiles
from fedfleet.identity.names import Identity, aggregator_dns_names
from fedfleet.identity.rotation import TrustState, advance, current_bundle
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

from tests.dataplane.harness import Aggregator, free_port, open_channel, write_manifest
from tests.identity.pki import (
    DAY,
    NAMESPACE,
    SERVER_NAME,
    TRAINING,
    Pki,
    credentials,
    tls_flags,
    write_bundle,
)

PARTICIPANTS = ["site-a-0", "site-b-0"]


class Federation:
    def __init__(self, root: Path) -> None:
        self.pki = Pki()
        self.log = root / "aggregator.log"
        self.metrics_port = free_port()
        manifest = write_manifest(
            root / "manifest.yaml", name=TRAINING, secureAggregation={"enabled": False}, minClients=1
        )
        self.aggregator = Aggregator(
            manifest,
            root / "state",
            self.log,
            args=(
                *tls_flags(write_bundle(root / "server", self.pki.server)),
                "--metrics-port",
                str(self.metrics_port),
            ),
            credentials=credentials(self.pki.controller, self.pki.ca.trust_pem),
            server_name=SERVER_NAME,
        )
        self.aggregator.start_round(1, PARTICIPANTS, min_clients=1)

    def stub(self, bundle: Bundle | None, trust: bytes | None = None) -> pb_grpc.AggregatorStub:
        channel = open_channel(
            self.aggregator.address, credentials(bundle, trust or self.pki.ca.trust_pem), SERVER_NAME
        )
        return pb_grpc.AggregatorStub(channel)

    def refusals(self) -> dict[str, float]:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        )
        found = re.findall(r'^fedfleet_aggregator_auth_refusals_total\{reason="(\w+)"\} (\S+)$', text, re.M)
        return {reason: float(n) for reason, n in found}

    def refusal_logs(self) -> list[dict[str, str]]:
        events = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and '"auth.refused"' in line:
                events.append(json.loads(line))
        return events

    def refused_once_more(self, reason: str, before: dict[str, float], timeout: float = 10) -> dict[str, str]:
        """The counter for `reason` went up by one and the log names the reason."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.refusals().get(reason, 0) == before.get(reason, 0) + 1:
                break
            time.sleep(0.05)
        assert self.refusals().get(reason, 0) == before.get(reason, 0) + 1, (reason, self.refusals())
        return [e for e in self.refusal_logs() if e["reason"] == reason][-1]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(tmp_path_factory.mktemp("mtls"))
    yield federation
    federation.aggregator.close()


def join(stub: pb_grpc.AggregatorStub, client_id: str, site: str, training: str = TRAINING) -> pb.JoinReply:
    request = pb.JoinRequest(training=training, client_id=client_id, site=site, session="s1", wait_seconds=1)
    reply: pb.JoinReply = stub.JoinRound(request, timeout=10)
    return reply


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_a_client_with_its_own_certificate_joins_the_round_it_was_selected_for(fed: Federation) -> None:
    stub = fed.stub(fed.pki.client("site-a", "site-a-0"))
    reply = join(stub, "site-a-0", "site-a")
    assert reply.action == pb.JoinReply.ACTION_TRAIN and reply.round == 1
    chunks = list(stub.DownloadModel(pb.ModelRequest(training=TRAINING, client_id="site-a-0", round=1)))
    assert chunks and all(c.data for c in chunks)


def test_a_revoked_site_s_valid_certificate_is_refused_until_the_revocation_is_lifted(
    fed: Federation,
) -> None:
    """What the operator sends when a remote site is suspended at the hub: the site's clients are
    forgotten as ready and every call of theirs is refused; other sites are untouched."""
    channel = open_channel(
        fed.aggregator.address, credentials(fed.pki.controller, fed.pki.ca.trust_pem), SERVER_NAME
    )
    control = pb_grpc.ControlStub(channel)
    revoked, other = (
        fed.stub(fed.pki.client("site-d", "site-d-0")),
        fed.stub(fed.pki.client("site-e", "site-e-0")),
    )
    assert join(revoked, "site-d-0", "site-d").action == pb.JoinReply.ACTION_WAIT
    assert join(other, "site-e-0", "site-e").action == pb.JoinReply.ACTION_WAIT

    def ready() -> list[str]:
        return list(control.ListReadyClients(pb.ListReadyRequest(), timeout=10).client_ids)

    assert {"site-d-0", "site-e-0"} <= set(ready())
    revoke = pb.RevokeSitesRequest(sites=[pb.RevokedSite(site="site-d", reason="suspended")])
    reply = control.RevokeSites(revoke, timeout=10)
    assert list(reply.dropped_clients) == ["site-d-0"] and list(reply.sites) == ["site-d"]
    before = fed.refusals()
    err = refused(lambda: join(revoked, "site-d-0", "site-d"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "site 'site-d' was revoked at the hub: suspended"
    fed.refused_once_more("site_revoked", before)
    assert "site-d-0" not in ready()
    assert join(other, "site-e-0", "site-e").action == pb.JoinReply.ACTION_WAIT

    too_many = pb.RevokeSitesRequest(sites=[pb.RevokedSite(site=f"s{i}") for i in range(1001)])
    assert (
        refused(lambda: control.RevokeSites(too_many, timeout=10)).code() == grpc.StatusCode.INVALID_ARGUMENT
    )
    control.RevokeSites(pb.RevokeSitesRequest(sites=[]), timeout=10)  # the site is back
    assert join(revoked, "site-d-0", "site-d").action == pb.JoinReply.ACTION_WAIT
    channel.close()


@pytest.mark.parametrize(
    ("case", "reason"),
    [("no certificate", "no_certificate"), ("expired", "expired"), ("another CA", "untrusted_issuer")],
)
def test_the_handshake_refuses_a_caller_without_a_valid_certificate(
    fed: Federation, case: str, reason: str
) -> None:
    bundle = {
        "no certificate": None,
        "expired": fed.pki.expired_client("site-a", "site-a-0"),
        "another CA": fed.pki.client("site-a", "site-a-0", issuer=fed.pki.foreign),
    }[case]
    before = fed.refusals()
    err = refused(lambda: join(fed.stub(bundle), "site-a-0", "site-a"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # no connection: nothing reached the engine
    event = fed.refused_once_more(reason, before)
    assert event["method"] == "tls-handshake" and event["detail"]


def test_a_certificate_of_another_training_is_refused(fed: Federation) -> None:
    before = fed.refusals()
    stub = fed.stub(fed.pki.client("site-a", "site-a-0", training="other"))
    err = refused(lambda: join(stub, "site-a-0", "site-a"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is for training default/other, this aggregator serves default/tiny" in str(err.details())
    event = fed.refused_once_more("other_training", before)
    assert event["method"] == "JoinRound" and "default/other" in event["detail"]


def test_a_site_certificate_cannot_claim_another_client_or_site(fed: Federation) -> None:
    stub = fed.stub(fed.pki.client("site-a", "site-a-0"))
    before = fed.refusals()
    err = refused(lambda: join(stub, "site-b-0", "site-b"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "certificate of client 'site-a-0' cannot act as client 'site-b-0'"
    fed.refused_once_more("client_mismatch", before)

    before = fed.refusals()
    err = refused(lambda: join(stub, "site-a-0", "site-b"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "certificate of site 'site-a' cannot claim site 'site-b'"
    fed.refused_once_more("site_mismatch", before)

    # the identity check comes first on every call, uploads included: site-b-0 is a participant
    before = fed.refusals()
    header = pb.UpdateHeader(training=TRAINING, client_id="site-b-0", round=1, num_examples=1, session="s1")
    err = refused(lambda: stub.UploadUpdate(iter([pb.UpdateMessage(header=header)]), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "cannot act as client 'site-b-0'" in str(
        err.details()
    )
    event = fed.refused_once_more("client_mismatch", before)
    assert event["method"] == "UploadUpdate"


def test_a_client_not_selected_is_refused_by_the_round_not_by_its_identity(fed: Federation) -> None:
    stub = fed.stub(fed.pki.client("site-c", "site-c-0"))
    assert join(stub, "site-c-0", "site-c").action == pb.JoinReply.ACTION_WAIT
    before = fed.refusals()
    err = refused(
        lambda: list(stub.DownloadModel(pb.ModelRequest(training=TRAINING, client_id="site-c-0", round=1)))
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "not a participant" in str(err.details())
    assert fed.refusals() == before  # a valid identity: not an authentication refusal


def test_only_the_controller_identity_may_drive_rounds(fed: Federation) -> None:
    client = fed.pki.client("site-a", "site-a-0")
    channel = open_channel(fed.aggregator.address, credentials(client, fed.pki.ca.trust_pem), SERVER_NAME)
    before = fed.refusals()
    err = refused(lambda: pb_grpc.ControlStub(channel).GetStatus(pb.StatusRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "may not call the Control service" in str(
        err.details()
    )
    fed.refused_once_more("wrong_role", before)
    assert fed.aggregator.status().model_version == 0  # the controller's certificate is accepted
    control = pb_grpc.ControlStub(channel)
    for call in (  # the listings name every client and round: the controller's alone too
        lambda: control.ListRounds(pb.ListRoundsRequest(), timeout=10),
        lambda: control.ListReadyClients(pb.ListReadyRequest(), timeout=10),
        lambda: control.GetRound(pb.RoundRequest(round=1), timeout=10),
        lambda: control.RevokeSites(pb.RevokeSitesRequest(sites=[pb.RevokedSite(site="site-b")]), timeout=10),
    ):
        assert refused(call).code() == grpc.StatusCode.PERMISSION_DENIED

    before = fed.refusals()
    err = refused(lambda: join(fed.stub(fed.pki.controller), "controller", "site-a"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    fed.refused_once_more("wrong_role", before)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--host", "0.0.0.0"), "no TLS: give --tls-cert, --tls-key and --tls-ca"),
        (("--host", "0.0.0.0", "--insecure-local"), "--insecure-local serves loopback only, not 0.0.0.0:"),
        (("--host", "127.0.0.1", "--tls-cert", "x.crt"), "--tls-key, --tls-ca missing"),
    ],
)
def test_the_aggregator_never_serves_plaintext_by_omission(
    tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    manifest = write_manifest(tmp_path / "m.yaml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedfleet",
            "aggregator",
            "--manifest",
            str(manifest),
            "--state-dir",
            str(tmp_path),
            *flags,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "rounds").exists()  # refused before loading or writing anything


def test_rotated_certificate_files_take_effect_without_a_restart(tmp_path: Path) -> None:
    """The aggregator reloads its files at the next handshake; a client rebuilds its channel
    before its next join. Rotating both to a new CA: the old certificates stop working."""
    fed = Federation(tmp_path)
    try:
        client_dir = write_bundle(tmp_path / "site-a-0", fed.pki.client("site-a", "site-a-0"))
        conn = AggregatorConnection(
            fed.aggregator.address,
            TRAINING,
            "site-a-0",
            "site-a",
            5,
            TlsFiles.in_dir(client_dir),
            SERVER_NAME,
        )
        assert conn.join().action == pb.JoinReply.ACTION_TRAIN

        new = Pki()  # another CA altogether, as after a CA rotation
        write_bundle(tmp_path / "server", new.server)
        write_bundle(client_dir, new.client("site-a", "site-a-0"))
        assert conn.join().action == pb.JoinReply.ACTION_TRAIN
        conn.close()

        before = fed.refusals()
        old = fed.stub(fed.pki.client("site-a", "site-a-0"), trust=new.ca.trust_pem)
        err = refused(lambda: join(old, "site-a-0", "site-a"))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        fed.refused_once_more("untrusted_issuer", before)
    finally:
        fed.aggregator.close()


def test_a_ca_rotation_never_fails_a_call_whichever_pods_have_caught_up(tmp_path: Path) -> None:
    """The Secrets of each step of a CA rotation (identity.rotation, as the operator writes
    them): any two pods, each holding the previous or the current contents, talk at the first
    try, client to aggregator and controller to aggregator. A rotation without the overlap
    (old CA straight to new) is refused, so the check can fail."""
    now = datetime.datetime.now(datetime.UTC)
    settle, t = 300.0, now.timestamp()
    old = Issuer.generate("old CA", 30 * DAY, now=now - 25 * DAY)  # due for rotation
    states = [TrustState(old, changed_at=t - settle)]
    for step in range(3):  # trust old + new; new issues; old dropped
        state, why = advance(
            states[-1], t + step * settle, settle, lambda: Issuer.generate("new CA", 30 * DAY)
        )
        assert why is not None
        states.append(state)
    pods = {
        "aggregator": (
            Identity(NAMESPACE, TRAINING, "aggregator"),
            tuple(aggregator_dns_names(TRAINING, NAMESPACE)),
        ),
        "site-a-0": (Identity.of_client(NAMESPACE, TRAINING, "site-a", "site-a-0"), ()),
        "controller": (Identity(NAMESPACE, TRAINING, "controller"), ()),
    }
    held: dict[str, list[Bundle]] = {name: [] for name in pods}
    for state in states:
        for name, (identity, dns) in pods.items():
            before = held[name][-1] if held[name] else None
            held[name].append(current_bundle(before, state.signer, identity, DAY, dns))

    server = write_bundle(tmp_path / "server", held["aggregator"][0])
    metrics_port = free_port()
    aggregator = Aggregator(
        write_manifest(tmp_path / "m.yaml", name=TRAINING, secureAggregation={"enabled": False}),
        tmp_path / "state",
        tmp_path / "aggregator.log",
        args=(*tls_flags(server), "--metrics-port", str(metrics_port)),
        credentials=credentials(held["controller"][0], held["controller"][0].ca_pem),
        server_name=SERVER_NAME,
    )
    try:
        aggregator.start_round(1, ["site-a-0"], min_clients=1)
        for step in range(len(states) - 1):
            for on_server, on_callers in (
                (step, step),
                (step + 1, step),
                (step, step + 1),
                (step + 1, step + 1),
            ):
                write_bundle(server, held["aggregator"][on_server])
                client, controller = held["site-a-0"][on_callers], held["controller"][on_callers]
                client_stub = pb_grpc.AggregatorStub(
                    open_channel(aggregator.address, credentials(client, client.ca_pem), SERVER_NAME)
                )
                assert join(client_stub, "site-a-0", "site-a").action == pb.JoinReply.ACTION_TRAIN
                control = pb_grpc.ControlStub(
                    open_channel(aggregator.address, credentials(controller, controller.ca_pem), SERVER_NAME)
                )
                control.GetStatus(pb.StatusRequest(), timeout=10)
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        )
        assert "fedfleet_aggregator_auth_refusals_total{" not in scraped  # not one handshake refused

        write_bundle(server, held["aggregator"][0])  # without the overlap: old CA only on one side,
        jumped = states[-1].signer.issue(pods["site-a-0"][0], DAY)  # new CA only on the other
        stub = pb_grpc.AggregatorStub(
            open_channel(aggregator.address, credentials(jumped, jumped.ca_pem), SERVER_NAME)
        )
        assert refused(lambda: join(stub, "site-a-0", "site-a")).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        aggregator.close()
