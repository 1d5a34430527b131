"""Certificates for the trust tests, issued with the operator's own code (fedfleet.identity)."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
from fedfleet.identity.ca import Bundle, Issuer
from fedfleet.identity.names import Identity, aggregator_dns_names, server_name

DAY = datetime.timedelta(days=1)
NAMESPACE, TRAINING = "default", "tiny"
SERVER_NAME = server_name(TRAINING, NAMESPACE)


def write_bundle(directory: Path, bundle: Bundle) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(bundle.cert_pem)
    (directory / "tls.key").write_bytes(bundle.key_pem)
    (directory / "ca.crt").write_bytes(bundle.ca_pem)
    return directory


def tls_flags(directory: Path) -> tuple[str, ...]:
    return (
        "--tls-cert",
        str(directory / "tls.crt"),
        "--tls-key",
        str(directory / "tls.key"),
        "--tls-ca",
        str(directory / "ca.crt"),
    )


def credentials(bundle: Bundle | None, trust: bytes) -> grpc.ChannelCredentials:
    """A caller presenting `bundle` (None: no certificate at all) and trusting `trust`."""
    if bundle is None:
        return grpc.ssl_channel_credentials(root_certificates=trust)
    return grpc.ssl_channel_credentials(trust, bundle.key_pem, bundle.cert_pem)


class Pki:
    """One CA shared by two trainings (as a user-supplied issuer may be), and a foreign CA."""

    def __init__(self) -> None:
        self.ca = Issuer.generate("test CA", 30 * DAY)
        self.foreign = Issuer.generate("someone else's CA", 30 * DAY)
        self.server = self.ca.issue(
            Identity(NAMESPACE, TRAINING, "aggregator"), DAY, tuple(aggregator_dns_names(TRAINING, NAMESPACE))
        )
        self.controller = self.ca.issue(Identity(NAMESPACE, TRAINING, "controller"), DAY)

    def client(
        self, site: str, client: str, training: str = TRAINING, issuer: Issuer | None = None
    ) -> Bundle:
        return (issuer or self.ca).issue(Identity.of_client(NAMESPACE, training, site, client), DAY)

    def expired_client(self, site: str, client: str) -> Bundle:
        long_ago = datetime.datetime.now(datetime.UTC) - 3 * DAY
        return self.ca.issue(Identity.of_client(NAMESPACE, TRAINING, site, client), DAY, now=long_ago)
