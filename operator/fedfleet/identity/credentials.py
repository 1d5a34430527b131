"""gRPC credentials from mounted certificate files (a kubernetes.io/tls Secret volume).

The server re-reads the files when they change, so a rotated Secret takes effect at the next
connection without a restart; clients build a new channel when theirs change (`TlsFiles.changed`).
"""

from __future__ import annotations

import grpc

from fedfleet.identity.files import TlsFiles
from fedfleet.logs import get_logger

log = get_logger(component="tls")


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """mTLS: the handshake refuses a peer without a certificate of the training's CA."""
    cert, key, ca = files.read()

    def reload() -> grpc.ServerCertificateConfiguration | None:
        if not files.changed():
            return None
        new_cert, new_key, new_ca = files.read()
        log.info("tls.reloaded", cert=str(files.cert))
        return grpc.ssl_server_certificate_configuration([(new_key, new_cert)], new_ca)

    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([(key, cert)], ca),
        reload,  # type: ignore[arg-type]  # grpc documents None as "unchanged"; the stub omits it
        require_client_authentication=True,
    )


def channel_credentials(cert: bytes, key: bytes, ca: bytes) -> grpc.ChannelCredentials:
    """A client's side of mTLS: its certificate chain and key, and the root it trusts."""
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def channel_options(server_name: str) -> list[tuple[str, str]]:
    """Verify the server certificate against `server_name` whatever address is dialled."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []
