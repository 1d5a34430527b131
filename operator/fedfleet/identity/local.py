"""Certificates for `fedfleet local run`: a throwaway CA per run, issued into OUT/tls, so a local
federation speaks the same mTLS, with the same identities, as one on a cluster."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from fedfleet.identity.ca import Bundle, Issuer
from fedfleet.identity.files import TlsFiles
from fedfleet.identity.names import Identity, aggregator_dns_names

LIFETIME = datetime.timedelta(days=7)


def write_bundle(directory: Path, bundle: Bundle) -> TlsFiles:
    """tls.crt, tls.key (owner-only) and ca.crt, as a Secret volume would hold them."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles.in_dir(directory)
    files.cert.write_bytes(bundle.cert_pem)
    files.ca.write_bytes(bundle.ca_pem)
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(bundle.key_pem)
    return files


def issue_local(
    root: Path, namespace: str, training: str, clients: list[tuple[str, str]]
) -> dict[str, TlsFiles]:
    """root/aggregator, root/controller and root/<client id>; the CA key is never written."""
    ca = Issuer.generate(f"{namespace}/{training} local CA", LIFETIME)
    out = {
        "aggregator": write_bundle(
            root / "aggregator",
            ca.issue(
                Identity(namespace, training, "aggregator"),
                LIFETIME,
                tuple(aggregator_dns_names(training, namespace)),
            ),
        ),
        "controller": write_bundle(
            root / "controller", ca.issue(Identity(namespace, training, "controller"), LIFETIME)
        ),
    }
    for site, client in clients:
        out[client] = write_bundle(
            root / client, ca.issue(Identity.of_client(namespace, training, site, client), LIFETIME)
        )
    return out
