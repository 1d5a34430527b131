"""When a stored certificate must be issued again: before it runs out, or when it no longer
matches what the operator would issue now (another CA, another identity or DNS names); and how
a generated CA is replaced without a moment in which two pods distrust each other.

A CA rotation overlaps (`advance`): first the new CA is added to every pod's `ca.crt` beside
the old one while the old one still issues; once that bundle has had time to reach every pod,
the new CA issues every leaf again; once those leaves have reached every pod, the old CA is
dropped from the bundle. At every step any two pods, each holding either the previous or the
current Secret contents, trust each other's certificates.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fedfleet.identity.ca import Bundle, Issuer, IssuerError, identity_of
from fedfleet.identity.names import Identity, IdentityError

RENEW_FRACTION = 1 / 3  # re-issue once less than a third of the lifetime remains


def renewal_reason(
    bundle: Bundle | None,
    identity: Identity,
    issuer: x509.Certificate,
    dns_names: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
) -> str | None:
    """Why the leaf in `bundle` must be issued again by `issuer`, or None while it is good.
    (Its `ca.crt` is not judged here: a changed trust bundle is written without a new leaf.)"""
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
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return "issued under another CA"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = (*sans.get_values_for_type(x509.DNSName), *map(str, sans.get_values_for_type(x509.IPAddress)))
    except x509.ExtensionNotFound:
        names = ()
    if sorted(names) != sorted(dns_names):
        return f"DNS names are {list(names)}, wanted {list(dns_names)}"
    return lifetime_reason(cert, now)


def current_bundle(
    bundle: Bundle | None,
    issuer: Issuer,
    identity: Identity,
    lifetime: datetime.timedelta,
    dns_names: tuple[str, ...] = (),
) -> Bundle:
    """What a Secret should hold now: `bundle` itself while it is good; the same leaf with the
    issuer's trust bundle when only that changed; else a new leaf."""
    if bundle is None or renewal_reason(bundle, identity, issuer.cert, dns_names) is not None:
        return issuer.issue(identity, lifetime, dns_names)
    if bundle.ca_pem.strip() != issuer.trust_pem.strip():
        return replace(bundle, ca_pem=issuer.trust_pem)
    return bundle


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


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TrustState:
    """A generated CA as the operator keeps it: the CA that issues, the one introduced to take
    over (trusted, not yet issuing), old ones still trusted, and when the trust last changed."""

    issuer: Issuer
    next: Issuer | None = None
    retiring: tuple[x509.Certificate, ...] = ()
    changed_at: float = 0.0  # unix seconds

    @property
    def bundle(self) -> bytes:
        """Every pod's `ca.crt`: the issuing CA first, then the others it must still trust."""
        certs = [self.issuer.cert, *([self.next.cert] if self.next else []), *self.retiring]
        return b"".join(_pem(c) for c in certs)

    @property
    def signer(self) -> Issuer:
        """The issuing CA, handing out the whole bundle as the trust of each leaf it issues."""
        return replace(self.issuer, root_pem=self.bundle)

    def secret_data(self) -> dict[str, str]:
        raw = {
            "tls.crt": self.issuer.cert_pem,
            "tls.key": self.issuer.as_bundle().key_pem,
            "ca.crt": self.bundle,
            "changed-at": repr(self.changed_at).encode(),  # round-trips exactly
        }
        if self.next is not None:
            raw |= {"next.crt": self.next.cert_pem, "next.key": self.next.as_bundle().key_pem}
        return {k: base64.b64encode(v).decode() for k, v in raw.items()}

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> TrustState:
        """Raises IssuerError when the Secret does not hold a usable CA."""
        try:
            raw = {k: base64.b64decode(v) for k, v in data.items()}
            issuer = Issuer.from_pem(raw["tls.crt"], raw["tls.key"])
            upcoming = Issuer.from_pem(raw["next.crt"], raw["next.key"]) if "next.crt" in raw else None
            trusted = x509.load_pem_x509_certificates(raw["ca.crt"]) if raw.get("ca.crt") else []
            changed_at = float(raw.get("changed-at", b"0"))
        except (KeyError, ValueError) as err:
            raise IssuerError(f"not a fedfleet CA Secret: {err}") from None
        own = {issuer.cert, *([upcoming.cert] if upcoming else [])}
        return cls(issuer, upcoming, tuple(c for c in trusted if c not in own), changed_at)


def advance(
    state: TrustState, now: float, settle_seconds: float, new_ca: Callable[[], Issuer]
) -> tuple[TrustState, str | None]:
    """One step of a rotation with overlap, taken when the CA runs out and each time the last
    change has had `settle_seconds` to reach every pod. Returns the state and why it changed
    (None: it did not)."""
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    settled = now - state.changed_at >= settle_seconds
    retiring = tuple(c for c in state.retiring if c.not_valid_after_utc > at)
    if state.issuer.cert.not_valid_after_utc <= at:  # nobody accepts it any more: nothing to overlap
        return TrustState(state.next or new_ca(), None, (), now), "the CA expired: replaced at once"
    if state.next is None and lifetime_reason(state.issuer.cert, at) is not None:
        return replace(state, next=new_ca(), retiring=retiring, changed_at=now), (
            "the CA runs out: a new CA is trusted beside it"
        )
    if state.next is not None and settled:
        return TrustState(state.next, None, (state.issuer.cert, *retiring), now), (
            "every pod trusts the new CA: it issues from now on"
        )
    if retiring and settled:
        return TrustState(
            state.issuer, None, (), now
        ), "every pod holds the new CA's leaf: the old CA is dropped"
    if retiring != state.retiring:
        return replace(state, retiring=retiring, changed_at=now), "an expired CA is dropped"
    return state, None
