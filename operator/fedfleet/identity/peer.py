"""Who is calling: the fedfleet identity in the peer certificate of a gRPC call, and whether it
may make a given request. Pure (auth context in, `Identity` or `AuthRefusal` out) so the rules
are testable without a server."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from fedfleet.identity.ca import identity_of
from fedfleet.identity.names import Identity, IdentityError
from fedfleet.refusal import Refusal
from fedfleet.text import shorten


class AuthRefusal(Refusal):
    """A refused caller; `reason` is a short, fixed label for metrics."""

    def __init__(
        self, code: Literal["UNAUTHENTICATED", "PERMISSION_DENIED"], reason: str, message: str
    ) -> None:
        super().__init__(code, message)
        self.reason = reason


@functools.lru_cache(maxsize=256)
def _identity_of_pem(pem: bytes) -> Identity:
    return identity_of(x509.load_pem_x509_certificate(pem))


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> Identity:
    pems = list(auth_context.get("x509_pem_cert", []))
    if not pems:
        raise AuthRefusal("UNAUTHENTICATED", "no_certificate", "no client certificate")
    try:
        return _identity_of_pem(pems[0])
    except (IdentityError, ValueError) as err:
        raise AuthRefusal("UNAUTHENTICATED", "no_identity", f"client certificate: {err}") from None


@dataclass(frozen=True)
class Policy:
    """The one training an aggregator serves: callers must be of it, in its namespace."""

    namespace: str
    training: str

    def _of_training(self, who: Identity) -> None:
        if (who.namespace, who.training) != (self.namespace, self.training):
            raise AuthRefusal(
                "PERMISSION_DENIED",
                "other_training",
                f"certificate {who} is for training {who.namespace}/{who.training}, "
                f"this aggregator serves {self.namespace}/{self.training}",
            )

    def client(self, who: Identity, client_id: str, site: str | None = None) -> None:
        """A site client acts only as itself, for its own site."""
        self._of_training(who)
        if who.role != "client":
            raise AuthRefusal("PERMISSION_DENIED", "wrong_role", f"certificate {who} is not a site client's")
        if client_id != who.client:
            raise AuthRefusal(
                "PERMISSION_DENIED",
                "client_mismatch",
                f"certificate of client {who.client!r} cannot act as client {shorten(repr(client_id))}",
            )
        if site is not None and site != who.site:
            raise AuthRefusal(
                "PERMISSION_DENIED",
                "site_mismatch",
                f"certificate of site {who.site!r} cannot claim site {shorten(repr(site))}",
            )

    def controller(self, who: Identity) -> None:
        self._of_training(who)
        if who.role != "controller":
            raise AuthRefusal(
                "PERMISSION_DENIED", "wrong_role", f"certificate {who} may not call the Control service"
            )
