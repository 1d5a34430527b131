"""When a stored certificate must be issued again: before it runs out, or when it no longer
matches what the operator would issue now (another CA, another identity or DNS names)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedfleet.identity.ca import Bundle, IssuerError, identity_of
from fedfleet.identity.names import Identity, IdentityError

RENEW_FRACTION = 1 / 3  # re-issue once less than a third of the lifetime remains


def renewal_reason(
    bundle: Bundle | None,
    identity: Identity,
    trust_pem: bytes,
    dns_names: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
) -> str | None:
    """Why the leaf in `bundle` must be issued again, or None while it is good."""
    if bundle is None:
        return "missing"
    try:
        cert = bundle.certificate
        found = identity_of(cert)
        serialization.load_pem_private_key(bundle.key_pem, password=None)
    except (ValueError, TypeError, IssuerError, IdentityError) as err:
        return f"unreadable: {err}"
    if found != identity:
        return f"identity is {found}, wanted {identity}"
    if bundle.ca_pem.strip() != trust_pem.strip():
        return "issued under another CA"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    if sorted(names) != sorted(dns_names):
        return f"DNS names are {list(names)}, wanted {list(dns_names)}"
    return lifetime_reason(cert, now)


def lifetime_reason(cert: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
    """Leaves and CAs alike: renew when less than RENEW_FRACTION of the lifetime is left."""
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = end - now
    if left <= (end - start) * RENEW_FRACTION:
        return (
            f"expires at {end.isoformat()}" if left.total_seconds() > 0 else f"expired at {end.isoformat()}"
        )
    return None
