"""Real processes for data-plane tests: an aggregator on a loopback port, talked to over gRPC."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from fedfleet.chunks import GRPC_OPTIONS, ChunkAssembler, iter_chunks
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_manifest(path: Path, name: str = "tiny", **spec: Any) -> Path:
    """A digits manifest, small by default; keyword arguments override spec keys."""
    base: dict[str, Any] = {
        "task": {"name": "digits-mlp", "config": {"hidden": 4, "localEpochs": 1}},
        "rounds": 3,
        "sites": {"names": ["site-a", "site-b", "site-c"]},
        "minClients": 2,
        "roundTimeoutSeconds": 60,
    }
    base.update(spec)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "fedfleet.io/v1alpha1",
                "kind": "FederatedTraining",
                "metadata": {"name": name},
                "spec": base,
            }
        )
    )
    return path


def fedfleet(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else subprocess.DEVNULL
    env = os.environ | {"FEDFLEET_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fedfleet", *args], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None, server_name: str = ""
) -> grpc.Channel:
    """Plaintext, or TLS verifying the server certificate against `server_name`."""
    if credentials is None:
        return grpc.insecure_channel(address, options=GRPC_OPTIONS)
    override = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, credentials, options=[*GRPC_OPTIONS, *override])


def wait_healthy(
    address: str,
    timeout: float = 180,  # a readiness wait: a loaded 2-core machine imports torch slowly
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str = "",
) -> None:
    with open_channel(address, credentials, server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise TimeoutError(f"aggregator at {address} not healthy after {timeout}s")


class Aggregator:
    """An aggregator process plus stubs to drive it like the controller and clients do. By
    default plaintext on loopback (`--insecure-local`); TLS tests pass the --tls-* flags in
    `args` and the controller's channel credentials."""

    def __init__(
        self,
        manifest: Path,
        state_dir: Path,
        log: Path,
        args: tuple[str, ...] = ("--insecure-local",),
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = fedfleet(
            "aggregator",
            "--manifest",
            str(manifest),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--state-dir",
            str(state_dir),
            *args,
            log=log,
        )
        wait_healthy(self.address, credentials=credentials, server_name=server_name)
        self.channel = open_channel(self.address, credentials, server_name)
        self.control = pb_grpc.ControlStub(self.channel)
        self.clients = pb_grpc.AggregatorStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(60)  # a graceful stop: 2 s of grace, longer on a loaded machine

    def start_round(
        self,
        number: int,
        participants: list[str],
        min_clients: int = 1,
        timeout: float = 60,
        kind: int = pb.ROUND_KIND_TRAIN,
    ) -> pb.RoundState:
        return self.control.StartRound(
            pb.StartRoundRequest(
                round=number,
                kind=kind,
                participants=participants,
                timeout_seconds=timeout,
                min_clients=min_clients,
            )
        )

    def join(self, client_id: str, session: str = "s1", training: str = "tiny") -> pb.JoinReply:
        return self.clients.JoinRound(
            pb.JoinRequest(
                training=training, client_id=client_id, site="site", session=session, wait_seconds=1
            )
        )

    def download(self, client_id: str, number: int, training: str = "tiny") -> dict[str, np.ndarray]:
        assembler = ChunkAssembler()
        for chunk in self.clients.DownloadModel(
            pb.ModelRequest(training=training, client_id=client_id, round=number)
        ):
            assembler.add(chunk)
        return assembler.result()

    def upload(
        self,
        client_id: str,
        number: int,
        chunks: list[pb.TensorChunk],
        examples: int = 10,
        session: str = "s1",
        base_version: int | None = None,
        training: str = "tiny",
    ) -> pb.UploadReply:
        header = pb.UpdateHeader(
            training=training,
            client_id=client_id,
            round=number,
            num_examples=examples,
            base_version=number - 1 if base_version is None else base_version,
            session=session,
        )
        messages = [pb.UpdateMessage(header=header), *(pb.UpdateMessage(chunk=c) for c in chunks)]
        return self.clients.UploadUpdate(iter(messages))

    def status(self) -> pb.AggregatorStatus:
        return self.control.GetStatus(pb.StatusRequest())


def chunks_of(update: dict[str, np.ndarray], chunk_bytes: int = 64) -> list[pb.TensorChunk]:
    return list(iter_chunks(update, chunk_bytes))


def rechecksum(chunk: pb.TensorChunk) -> pb.TensorChunk:
    chunk.crc32 = zlib.crc32(chunk.data)
    return chunk


@contextmanager
def running_aggregator(tmp_path: Path, **spec: Any) -> Iterator[Aggregator]:
    manifest = write_manifest(tmp_path / "manifest.yaml", **spec)
    aggregator = Aggregator(manifest, tmp_path / "state", tmp_path / "aggregator.log")
    try:
        yield aggregator
    finally:
        aggregator.close()
