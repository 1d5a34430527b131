"""Issue a training's certificates with `cryptography`'s x509 API: a CA, leaf certificates that
carry an `Identity`, and the PEM bundles Secrets and gRPC credentials are made of.

Keys are ECDSA P-256 (fast to generate, accepted by gRPC's BoringSSL). Validity starts five
minutes in the past so a node with a slightly late clock still accepts a fresh certificate.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfleet.identity.names import Identity, IdentityError

CLOCK_SKEW = datetime.timedelta(minutes=5)
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class IssuerError(ValueError):
    """Key material that cannot act as a CA: the message names what is wrong."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _general_name(name: str) -> x509.GeneralName:
    """A DNS name, or an IP address SAN for a literal address (an external address may be one)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _hash_for(key: SigningKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass(frozen=True)
class Bundle:
    """A leaf certificate (with any intermediate after it), its key, and the trust root: the
    `tls.crt`, `tls.key` and `ca.crt` of a kubernetes.io/tls Secret as cert-manager writes it."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def secret_data(self) -> dict[str, str]:
        return {
            key: base64.b64encode(value).decode()
            for key, value in (("tls.crt", self.cert_pem), ("tls.key", self.key_pem), ("ca.crt", self.ca_pem))
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> Bundle:
        try:
            raw = {k: base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt")}
        except (KeyError, ValueError) as err:
            raise IssuerError(f"not a tls Secret with tls.crt, tls.key and ca.crt: {err}") from None
        return cls(raw["tls.crt"], raw["tls.key"], raw["ca.crt"])

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class Issuer:
    """A CA: its certificate, its key and the root clients must trust (itself, or the root above
    an intermediate given by the user)."""

    cert: x509.Certificate
    key: SigningKey
    chain_pem: bytes = b""  # certificates between this CA and the root, appended to leaves
    root_pem: bytes = b""

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def trust_pem(self) -> bytes:
        return self.root_pem or self.cert_pem

    @classmethod
    def generate(
        cls, common_name: str, lifetime: datetime.timedelta, now: datetime.datetime | None = None
    ) -> Issuer:
        now = now or _now()
        key = _new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfleet"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, ca_pem: bytes = b"") -> Issuer:
        """A user's issuer Secret (tls.crt, tls.key, optional ca.crt), checked to be a usable CA."""
        try:
            certs = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as err:
            raise IssuerError(f"tls.crt is not a PEM certificate: {err}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as err:
            raise IssuerError(f"tls.key is not an unencrypted PEM private key: {err}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise IssuerError(f"tls.key: unsupported key type {type(key).__name__}")
        cert = certs[0]
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise IssuerError("tls.crt is not a CA certificate (basicConstraints CA:TRUE is missing)")
        public = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        own = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != own:
            raise IssuerError("tls.key does not belong to the certificate in tls.crt")
        if cert.not_valid_after_utc <= _now():
            raise IssuerError(f"tls.crt expired at {cert.not_valid_after_utc.isoformat()}")
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:])
        return cls(cert, key, chain, ca_pem if ca_pem.strip() else b"")

    def issue(
        self,
        identity: Identity,
        lifetime: datetime.timedelta,
        dns_names: tuple[str, ...] = (),
        now: datetime.datetime | None = None,
    ) -> Bundle:
        """A leaf for `identity`, usable as TLS client and server; never outlives the CA."""
        key = _new_key()
        leaf = self.sign(key.public_key(), identity.uri, identity.common_name, lifetime, dns_names, now)
        return Bundle(leaf, _key_pem(key), self.trust_pem)

    def sign_request(self, csr_pem: bytes, uri: str, common_name: str, lifetime: datetime.timedelta) -> bytes:
        """A leaf for a key generated elsewhere (a site's CSR): only the CSR's public key is
        used; the names are the issuer's to choose, never the requester's."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise IssuerError(f"not a PEM certificate signing request: {str(err)[:80]}") from None
        if not csr.is_signature_valid:
            raise IssuerError("the certificate signing request's signature does not verify")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise IssuerError(f"unsupported key type {type(public).__name__}")
        return self.sign(public, uri, common_name, lifetime)

    def sign(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
        uri: str,
        common_name: str,
        lifetime: datetime.timedelta,
        dns_names: tuple[str, ...] = (),
        now: datetime.datetime | None = None,
    ) -> bytes:
        """The PEM leaf (and any intermediate) for one URI SAN identity and `dns_names`."""
        now = now or _now()
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        sans += [_general_name(n) for n in dns_names]
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfleet"),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + lifetime, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
            .sign(self.key, _hash_for(self.key))
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem

    def as_bundle(self) -> Bundle:
        """The CA itself as a tls Secret (the operator's record of a CA it generated)."""
        return Bundle(self.cert_pem + self.chain_pem, _key_pem(self.key), self.trust_pem)


def identity_of(cert: x509.Certificate) -> Identity:
    """The fedfleet identity in a certificate's URI SAN (exactly one)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"the certificate has {len(uris)} URI SANs; a fedfleet identity has exactly one")
    return Identity.parse(uris[0])
