"""Who a remote site is, and how it proves it without the hub ever holding a site secret.

The hub admin mints a one-time join token (`fedfleet site join-token NAME`); only its sha256
is stored at the hub, in the Secret `fedfleet-join-<site>` beside the FederationSite, with an
expiry. The agent generates its key in the site cluster and sends a CSR with the token; the
gateway CA (Secret `fedfleet-site-gateway-ca` in the operator's namespace) signs one URI SAN,

    spiffe://fedfleet.io/ns/<namespace>/site/<site>/agent

chosen by the hub, never read from the CSR. The Secret then records the certificate's
fingerprint: a later token or a deleted site makes every earlier certificate useless.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedfleet.identity.ca import Issuer
from fedfleet.identity.names import TRUST_DOMAIN

TOKEN_PREFIX = "fft1"
TOKEN_TTL = datetime.timedelta(hours=1)
AGENT_LIFETIME = datetime.timedelta(days=90)
GATEWAY_CA_SECRET = "fedfleet-site-gateway-ca"
GATEWAY_SERVER_NAME = "fedfleet-site-gateway"  # what agents verify, whatever address they dial
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_AGENT_URI = re.compile(
    rf"^spiffe://{re.escape(TRUST_DOMAIN)}/ns/(?P<ns>{_LABEL})/site/(?P<site>{_SUBDOMAIN})/agent$"
)
_TOKEN = re.compile(
    rf"^{TOKEN_PREFIX}:(?P<ns>{_LABEL}):(?P<site>{_SUBDOMAIN}):(?P<secret>[A-Za-z0-9_-]{{43}})$"
)


class EnrolmentError(ValueError):
    """A token, CSR or certificate that does not make a site: the message says why (never echoing it)."""


@dataclass(frozen=True)
class SiteName:
    namespace: str  # the FederationSite's namespace at the hub
    name: str

    @property
    def uri(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/site/{self.name}/agent"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def join_secret_name(site: str) -> str:
    return f"fedfleet-join-{site}"[:253]


def agent_of(cert: x509.Certificate) -> SiteName:
    """The site an agent certificate names (its one URI SAN)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise EnrolmentError("the certificate has no URI SAN; it is not a site agent's") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    found = _AGENT_URI.match(uris[0]) if len(uris) == 1 else None
    if found is None:
        raise EnrolmentError(
            "the certificate is not a site agent's (spiffe://fedfleet.io/ns/<ns>/site/<site>/agent)"
        )
    return SiteName(found["ns"], found["site"])


def fingerprint(cert_pem: bytes) -> str:
    """sha256 of the first certificate's DER, hex: what the hub records and the site pins."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# -- join tokens -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    site: SiteName
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}:{self.site.namespace}:{self.site.name}:{self.secret}"


def new_token(site: SiteName) -> Token:
    return Token(site, secrets.token_urlsafe(32))


def parse_token(text: str) -> Token:
    found = _TOKEN.match(text.strip()) if len(text) < 400 else None
    if found is None:
        raise EnrolmentError(f"not a join token ({TOKEN_PREFIX}:<namespace>:<site>:<secret>)")
    return Token(SiteName(found["ns"], found["site"]), found["secret"])


def token_hash(token: Token) -> str:
    return hashlib.sha256(str(token).encode()).hexdigest()


@dataclass(frozen=True)
class JoinRecord:
    """What the hub keeps of a site's enrolment (the join Secret's data)."""

    token_sha256: str
    expires: datetime.datetime
    used: str = ""  # when the token was spent (RFC 3339); empty: unused
    agent_sha256: str = ""  # the fingerprint of the certificate it bought

    def data(self) -> dict[str, str]:
        raw = {
            "token-sha256": self.token_sha256,
            "expires": self.expires.isoformat(),
            "used": self.used,
            "agent-sha256": self.agent_sha256,
        }
        return {k: base64.b64encode(v.encode()).decode() for k, v in raw.items()}

    @classmethod
    def from_data(cls, data: dict[str, str]) -> JoinRecord:
        try:
            raw = {k: base64.b64decode(v).decode() for k, v in data.items()}
            return cls(
                raw["token-sha256"],
                datetime.datetime.fromisoformat(raw["expires"]),
                raw.get("used", ""),
                raw.get("agent-sha256", ""),
            )
        except (KeyError, ValueError) as err:
            raise EnrolmentError(f"the join record is unreadable ({type(err).__name__})") from None

    def check(self, token: Token, now: datetime.datetime) -> None:
        if not hmac.compare_digest(self.token_sha256, token_hash(token)):
            raise EnrolmentError(f"the join token for site {token.site} is not the one last issued")
        if self.used:
            raise EnrolmentError(f"the join token for site {token.site} was already used at {self.used}")
        if now >= self.expires:
            raise EnrolmentError(
                f"the join token for site {token.site} expired at {self.expires.isoformat()}"
            )


def sign_agent(ca: Issuer, site: SiteName, csr_pem: bytes) -> bytes:
    return ca.sign_request(csr_pem, site.uri, f"{site.name}-agent", AGENT_LIFETIME)


def new_key_and_csr() -> tuple[bytes, bytes]:
    """A private key generated here (PEM, never sent) and its CSR (PEM, sent)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedfleet")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether a certificate was issued for this private key."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der))
