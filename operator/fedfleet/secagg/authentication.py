"""Who is behind a key advertisement: the client's mTLS identity, checked by its neighbours.

Against a lying aggregator, a client must know that the public keys it masks with and seals
shares to are its neighbour's and not the aggregator's. Each client process holds one
long-term X25519 key for the training (`LongTermKey`) and signs, once, (training, client id,
that key) with the private key of its certificate (`Signer`). Every advertisement carries the
long-term key, that signature and the certificate chain; a neighbour checks the signature,
that the certificate chains to the training's CA and that its identity names that very client
of this training (`Verifier`, cached: the same statement comes round after round), then
derives a pair key from both long-term keys (once per pair). Each round's fresh keys are
bound to it: the shares of a round are sealed under a key that mixes the pair key in, with
both clients' fresh keys as associated data, so shares sealed to a substituted key are
unreadable to the aggregator and fail authentication at the neighbour, who then never masks
with that key. The per-round cost is symmetric crypto only; public-key work is per pair and
process. A credential is one kind byte, then:

    kind 1, X509:      a count, then length-prefixed DER certificates, leaf first
    kind 0, EPHEMERAL: a raw Ed25519 public key (no PKI: plaintext loopback runs only)

A verifier built without a CA accepts either kind and checks only the signature: against an
aggregator on the same machine as every client there is nothing to authenticate. A verifier
with a CA refuses ephemeral credentials. Verified chains are cached per verifier (a client
process sees the same neighbours' certificates round after round); validity times are checked
on every use.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from fedfleet.identity.ca import identity_of
from fedfleet.identity.names import IdentityError
from fedfleet.secagg.crypto import KeyPair, pack_strings, pair_info
from fedfleet.secagg.errors import AuthenticationFailed, MalformedMessage
from fedfleet.text import shorten as _short

EPHEMERAL, X509 = 0, 1
MAX_CERTIFICATES = 4
MAX_CREDENTIAL_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 1024
CACHE_ENTRIES = 4096
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def _verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def encode_chain(certificates: list[x509.Certificate]) -> bytes:
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certificates]
    return bytes((X509, len(ders))) + b"".join(len(d).to_bytes(2, "big") + d for d in ders)


def decode_chain(credential: bytes) -> list[x509.Certificate]:
    """The certificates of an X509 credential; every length checked against what is left."""
    if len(credential) < 2 or credential[0] != X509:
        raise MalformedMessage("the credential is not an X.509 certificate chain")
    count, pos, out = credential[1], 2, []
    if not 1 <= count <= MAX_CERTIFICATES:
        raise MalformedMessage(f"a credential holds 1..{MAX_CERTIFICATES} certificates, not {count}")
    for _ in range(count):
        size = int.from_bytes(credential[pos : pos + 2], "big")
        der = credential[pos + 2 : pos + 2 + size]
        if len(der) != size or not size:
            raise MalformedMessage("the credential is truncated")
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError:
            raise MalformedMessage("the credential holds a certificate that does not parse") from None
        pos += 2 + size
    if pos != len(credential):
        raise MalformedMessage("the credential has trailing bytes")
    return out


def long_term_statement(training: str, client: str, public: bytes) -> bytes:
    """What a client's identity key signs once per process: its long-term SecAgg+ key."""
    return pack_strings("fedfleet-secagg/long-term-key", training, client, public)


class LongTermKey:
    """A client's SecAgg+ key for one training (one per process, reused every round): its
    signed public half goes into every advertisement; pair keys with neighbours are derived
    once and cached."""

    def __init__(self, signer: Signer, training: str, client: str) -> None:
        self.signer, self.training, self.client = signer, training, client
        self._pair = KeyPair.generate()
        self.public = self._pair.public
        self.signature = signer.sign(long_term_statement(training, client, self.public))
        self._pairs: dict[tuple[str, bytes], bytes] = {}

    @property
    def credential(self) -> bytes:
        return self.signer.credential

    def pair_key(self, peer: str, peer_public: bytes) -> bytes:
        """A secret only this client and `peer` (with that long-term key) can compute."""
        key = (peer, peer_public)
        if key not in self._pairs:
            info = pair_info("long-term", pack_strings(self.training), self.client, peer)
            if len(self._pairs) >= CACHE_ENTRIES:
                self._pairs.clear()
            self._pairs[key] = self._pair.agree(peer_public, info)
        return self._pairs[key]


class Signer:
    """A client's signing key and the credential its neighbours check it against."""

    def __init__(self, key: PrivateKey, credential: bytes) -> None:
        self._key = key
        self.credential = credential

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Signer:
        """From the mounted `tls.crt` (leaf, then any intermediates) and `tls.key`."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"unsupported identity key type {type(key).__name__}")
        return cls(key, encode_chain(x509.load_pem_x509_certificates(cert_pem)))

    @classmethod
    def ephemeral(cls) -> Signer:
        key = ed25519.Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key, bytes((EPHEMERAL,)) + raw)

    def sign(self, data: bytes) -> bytes:
        return _sign(self._key, data)


@dataclass(frozen=True)
class _Verified:
    key: PublicKey
    not_after: float  # POSIX seconds: the earliest expiry in the chain


class Verifier:
    """Checks credentials and signatures of the clients of one training."""

    def __init__(self, ca_pem: bytes | None = None, namespace: str = "", training: str = "") -> None:
        self.anchors = x509.load_pem_x509_certificates(ca_pem) if ca_pem else []
        self.namespace, self.training = namespace, training
        self._cache: dict[tuple[str, bytes], _Verified] = {}
        self._signed: set[tuple[str, bytes, bytes, bytes]] = set()
        self._long_term: set[tuple[str, str, bytes, bytes, bytes]] = set()

    @property
    def authenticated(self) -> bool:
        return bool(self.anchors)

    def verify(self, client: str, credential: bytes, signature: bytes, data: bytes) -> None:
        """Raises `AuthenticationFailed` naming what is wrong, unless `client` signed `data`
        (a statement verified once is remembered; the certificate's expiry is checked each time)."""
        key = self.key_of(client, credential)
        if (client, credential, signature, data) in self._signed:
            return
        if not _verify(key, signature, data):
            raise AuthenticationFailed(
                f"the signature of {_short(client)!r} on its advertised keys is not valid"
            )
        if len(self._signed) >= CACHE_ENTRIES:
            self._signed.clear()
        self._signed.add((client, credential, signature, data))

    def verify_long_term(
        self, training: str, client: str, credential: bytes, signature: bytes, public: bytes
    ) -> None:
        """`verify` of `long_term_statement(training, client, public)`. The same advertisement
        comes every round: once verified it is one lookup (and the certificate's expiry check)."""
        fields = (training, client, credential, signature, public)
        if fields in self._long_term:
            self.key_of(client, credential)
            return
        self.verify(client, credential, signature, long_term_statement(training, client, public))
        if len(self._long_term) >= CACHE_ENTRIES:
            self._long_term.clear()
        self._long_term.add(fields)

    def key_of(self, client: str, credential: bytes) -> PublicKey:
        if not credential:
            raise AuthenticationFailed(f"{_short(client)!r} sent no credential")
        if credential[0] == EPHEMERAL:
            if self.anchors:
                raise AuthenticationFailed(
                    f"{_short(client)!r} signed with an ephemeral key; this training needs its certificate"
                )
            if len(credential) != 33:
                raise MalformedMessage("an ephemeral credential is one Ed25519 public key")
            return ed25519.Ed25519PublicKey.from_public_bytes(credential[1:])
        cached = self._cache.get((client, credential))
        if cached is None:
            now = datetime.datetime.now(datetime.UTC)
            cached = self._check_chain(client, decode_chain(credential), now)
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[(client, credential)] = cached
        if time.time() > cached.not_after:
            raise AuthenticationFailed(f"the certificate of {_short(client)!r} has expired")
        return cached.key

    def _check_chain(self, client: str, chain: list[x509.Certificate], now: datetime.datetime) -> _Verified:
        leaf = chain[0]
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise AuthenticationFailed(f"a certificate of {_short(client)!r} is outside its validity")
        if self.anchors:
            _chains_to(chain, self.anchors, client)
            try:
                who = identity_of(leaf)
            except IdentityError:
                raise AuthenticationFailed(f"the certificate of {_short(client)!r} names no client") from None
            expected = (self.namespace, self.training, "client", client)
            if (who.namespace, who.training, who.role, who.client) != expected:
                raise AuthenticationFailed(
                    f"keys advertised for {_short(client)!r} are signed by the certificate of {who}"
                )
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise AuthenticationFailed(f"the certificate of {_short(client)!r} has an unsupported key")
        return _Verified(key, min(c.not_valid_after_utc for c in chain).timestamp())


def _chains_to(chain: list[x509.Certificate], anchors: list[x509.Certificate], client: str) -> None:
    """Each certificate is issued by the next; the last by (or is) one of the trust anchors."""
    issuers = [*chain[1:], None]
    for cert, parent in zip(chain, issuers, strict=True):
        candidates = [parent] if parent is not None else anchors
        if parent is None and cert in anchors and cert is not chain[0]:
            return
        for issuer in candidates:
            try:
                constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
                if constraints.ca:
                    cert.verify_directly_issued_by(issuer)
                    break
            except (x509.ExtensionNotFound, InvalidSignature, ValueError, TypeError):
                continue
        else:
            raise AuthenticationFailed(
                f"the certificate of {_short(client)!r} does not chain to the training's CA"
            )
