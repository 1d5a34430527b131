"""Certificate files as mounted from a kubernetes.io/tls Secret, and the transport rules every
process shares: mTLS, or plaintext to loopback only. No grpc import: the CLI loads this early."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


class TlsConfigError(ValueError):
    """Missing or unreadable certificate files, or a transport that could leak plaintext;
    the message names the file or flag."""


def is_loopback(address: str) -> bool:
    """`host:port` (or `[v6]:port`) on this machine only."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_files(cert: str | None, key: str | None, ca: str | None) -> TlsFiles | None:
    """From the three --tls-* flags: all of them, or none (then None)."""
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    if not any(given.values()):
        return None
    if missing := [flag for flag, value in given.items() if not value]:
        raise TlsConfigError(f"{', '.join(missing)} missing: give all of --tls-cert, --tls-key, --tls-ca")
    return TlsFiles(Path(str(cert)), Path(str(key)), Path(str(ca)))


@dataclass
class TlsFiles:
    cert: Path
    key: Path
    ca: Path
    _digest: str = field(default="", init=False, repr=False)

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """The cert-manager layout: tls.crt, tls.key, ca.crt."""
        return cls(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            try:
                data = path.read_bytes()
            except OSError as err:
                raise TlsConfigError(f"{flag} {path}: {err.strerror or err}") from None
            if b"-----BEGIN" not in data:
                raise TlsConfigError(f"{flag} {path}: not PEM")
            out.append(data)
        cert, key, ca = out
        self._digest = hashlib.sha256(cert + key + ca).hexdigest()
        return cert, key, ca

    def changed(self) -> bool:
        """True when the files differ from the last `read` (a rotated Secret)."""
        before = self._digest
        try:
            self.read()
        except TlsConfigError:
            self._digest = before  # half-written during a Secret update: keep what works
            return False
        return self._digest != before
