"""`fedfleet aggregator`: load the manifest, build or resume the global model, serve gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import prometheus_client
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfleet.aggregator.engine import RoundEngine
from fedfleet.aggregator.service import check_transport, serve
from fedfleet.api.training import FederatedTraining
from fedfleet.chunks import DEFAULT_CHUNK_BYTES
from fedfleet.identity.files import TlsFiles
from fedfleet.models import initial_weights
from fedfleet.secagg import Verifier


async def run_aggregator(
    training: FederatedTraining,
    address: str,
    state_dir: Path,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    staging_slots: int = 1,
    *,
    tls: TlsFiles | None = None,
    insecure_local: bool = False,
    metrics_port: int = 0,
    lineage_key: Ed25519PrivateKey | None = None,
) -> None:
    check_transport(address, tls, insecure_local)  # before loading a model it would not serve
    verifier = None
    if tls is not None:
        ca_pem = tls.read()[2]  # a missing or unreadable file fails here, named
        verifier = Verifier(ca_pem, training.metadata.namespace, training.metadata.name)
    if metrics_port:
        prometheus_client.start_http_server(metrics_port, addr=address.rsplit(":", 1)[0].strip("[]"))
    engine = RoundEngine(
        training.metadata.name,
        training.spec,
        lambda: initial_weights(training.spec),
        state_dir,
        staging_slots,
        lineage_key,
        verifier,
        chunk_bytes=chunk_bytes,
    )
    server = asyncio.create_task(
        serve(
            engine,
            address,
            chunk_bytes,
            tls=tls,
            namespace=training.metadata.namespace,
            insecure_local=insecure_local,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await server
