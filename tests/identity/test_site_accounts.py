"""Per-site accounting at the aggregator over real gRPC and mTLS: each upload accepted or refused,
its bytes, the model bytes sent and the clients' time in rounds are counted against the site
the client's certificate names, shown in GetStatus, and still there after a restart."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc

from tests.dataplane.harness import Aggregator, chunks_of, open_channel, write_manifest
from tests.identity.pki import SERVER_NAME, TRAINING, Pki, credentials, tls_flags, write_bundle

CLIENTS = {"site-a-0": "site-a", "site-a-1": "site-a", "site-b-0": "site-b"}


def start(root: Path, pki: Pki, manifest: Path) -> Aggregator:
    return Aggregator(
        manifest,
        root / "state",
        root / "aggregator.log",
        args=tls_flags(write_bundle(root / "server", pki.server)),
        credentials=credentials(pki.controller, pki.ca.trust_pem),
        server_name=SERVER_NAME,
    )


def test_uploads_bytes_and_client_seconds_are_counted_against_the_certificate_s_site(tmp_path: Path) -> None:
    pki = Pki()
    manifest = write_manifest(
        tmp_path / "manifest.yaml", name=TRAINING, secureAggregation={"enabled": False}, minClients=1
    )
    aggregator = start(tmp_path, pki, manifest)
    aggregator.start_round(1, sorted(CLIENTS), min_clients=1)
    stubs = {
        cid: pb_grpc.AggregatorStub(
            open_channel(
                aggregator.address, credentials(pki.client(site, cid), pki.ca.trust_pem), SERVER_NAME
            )
        )
        for cid, site in CLIENTS.items()
    }
    sent: dict[str, int] = {"site-a": 0, "site-b": 0}
    model: dict[str, np.ndarray] = {}
    for cid, site in CLIENTS.items():
        join = pb.JoinRequest(training=TRAINING, client_id=cid, site=site, session="s1", wait_seconds=1)
        assert stubs[cid].JoinRound(join, timeout=10).action == pb.JoinReply.ACTION_TRAIN
        download = pb.ModelRequest(training=TRAINING, client_id=cid, round=1)
        for chunk in stubs[cid].DownloadModel(download, timeout=10):
            sent[site] += chunk.ByteSize()
            model[chunk.name] = np.zeros(chunk.shape, np.float32)

    def upload(cid: str, chunks: list[pb.TensorChunk]) -> None:
        header = pb.UpdateHeader(
            training=TRAINING, client_id=cid, round=1, num_examples=10, base_version=0, session="s1"
        )
        messages = [pb.UpdateMessage(header=header), *(pb.UpdateMessage(chunk=c) for c in chunks)]
        stubs[cid].UploadUpdate(iter(messages), timeout=10)

    update = chunks_of({name: np.full_like(t, 0.01) for name, t in model.items()}, 256)
    whole = sum(len(c.data) for c in update)
    upload("site-a-0", update)  # accepted
    corrupt = [pb.TensorChunk.FromString(c.SerializeToString()) for c in update]
    corrupt[1].crc32 ^= 1  # refused at the second chunk: two chunks were read
    with pytest.raises(grpc.RpcError) as caught:
        upload("site-a-1", corrupt)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    upload("site-b-0", update)  # accepted
    with pytest.raises(grpc.RpcError) as caught:
        upload("site-b-0", update)  # a second upload of the same round: refused before any chunk
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    aggregator.control.DropClient(pb.DropRequest(round=1, client_id="site-a-1", reason="gone"), timeout=10)

    def figures(agg: Aggregator) -> dict[str, tuple[int, int, int, int, float]]:
        return {
            s.site: (s.updates_accepted, s.updates_refused, s.bytes_received, s.bytes_sent, s.client_seconds)
            for s in agg.status().sites
        }

    shown = figures(aggregator)
    for _ in range(100):  # the round closes (all accounted for), then its time is counted
        if all(f[4] > 0 for f in shown.values()):
            break
        shown = figures(aggregator)
    two_chunks = len(update[0].data) + len(update[1].data)
    assert {site: f[:4] for site, f in shown.items()} == {
        "site-a": (1, 1, whole + two_chunks, sent["site-a"]),
        "site-b": (1, 1, whole, sent["site-b"]),
    }
    assert all(0 < f[4] < 60 for f in shown.values()), shown
    aggregator.close()

    restarted = start(tmp_path, pki, manifest)  # the figures were written before they were shown
    try:
        assert figures(restarted) == shown
    finally:
        restarted.close()
