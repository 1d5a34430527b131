"""Refusals the TLS handshake makes before any RPC exists: no certificate, expired, another CA.

gRPC's C core refuses those connections itself and only writes a line to stderr; Python gets
no callback. So while the server runs, fd 2 is teed through a pipe: every line passes through
unchanged, and each `Handshake failed` line also becomes an `auth.refused` log event and a count
in `fedfleet_aggregator_auth_refusals_total` with a fixed reason label.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fedfleet.aggregator.metrics import AUTH_REFUSALS
from fedfleet.logs import get_logger

log = get_logger(component="aggregator")
FAILED = re.compile(rb"Handshake failed with error (\w+): (.*)")
REASONS = (  # OpenSSL/BoringSSL wording -> metrics label
    (b"PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"),
    (b"certificate has expired", "expired"),
    (b"certificate is not yet valid", "not_yet_valid"),
    (b"unable to get local issuer certificate", "untrusted_issuer"),
    (b"self-signed certificate", "untrusted_issuer"),
    (b"WRONG_VERSION_NUMBER", "plaintext"),
    (b"HTTP_REQUEST", "plaintext"),
)


def reason_of(detail: bytes) -> str:
    return next((label for marker, label in REASONS if marker in detail), "tls_handshake")


def _refused(reason: str, detail: str) -> None:
    AUTH_REFUSALS.labels(reason=reason).inc()
    log.warning("auth.refused", method="tls-handshake", code="UNAVAILABLE", reason=reason, detail=detail)


def _pump(source: int, sink: int, loop: asyncio.AbstractEventLoop) -> None:
    """Never writes to fd 2 itself (it is the pipe's only reader): events go via the loop."""
    with os.fdopen(source, "rb") as lines, os.fdopen(sink, "wb", buffering=0) as out:
        for line in lines:
            out.write(line)
            if found := FAILED.search(line):
                detail = found.group(2).decode(errors="replace").strip()
                with contextlib.suppress(RuntimeError):  # the loop closed while we drain
                    loop.call_soon_threadsafe(_refused, reason_of(found.group(2)), detail)


@contextmanager
def handshake_refusals(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Tee stderr for the duration; restored (and drained) on the way out, before any traceback."""
    read_fd, write_fd = os.pipe()
    original = os.dup(2)
    sink = os.dup(original)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, sink, loop), name="handshake-log", daemon=True)
    pump.start()
    try:
        yield
    finally:
        os.dup2(original, 2)  # the pipe's last writer is gone: the pump drains it and ends
        os.close(original)
        pump.join(5)
