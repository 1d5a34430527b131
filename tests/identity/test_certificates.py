"""The identity scheme, issuing and the rotation rule, on the certificates themselves."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from fedfleet.identity.ca import Issuer, IssuerError, identity_of
from fedfleet.identity.names import Identity, IdentityError, aggregator_dns_names
from fedfleet.identity.peer import AuthRefusal, peer_identity
from fedfleet.identity.rotation import TrustState, advance, current_bundle, renewal_reason

from tests.identity.pki import DAY

CLIENT = Identity.of_client("team-a", "llm", "hospital-1", "hospital-1-0")


def test_identities_round_trip_through_their_uri() -> None:
    assert CLIENT.uri == "spiffe://fedfleet.io/ns/team-a/training/llm/site/hospital-1/client/hospital-1-0"
    for identity in (
        CLIENT,
        Identity("team-a", "llm", "aggregator"),
        Identity("team-a", "llm", "controller"),
    ):
        assert Identity.parse(identity.uri) == identity


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://example.org/ns/a/training/b/controller",
        "spiffe://fedfleet.io/ns/a/training/b/site/c/client/d/extra",
        "spiffe://fedfleet.io/ns/a/training/b/site/../client/d",
        "spiffe://fedfleet.io/ns/A/training/b/controller",
        "spiffe://fedfleet.io/ns/a/training/b/site//client/d",
    ],
)
def test_anything_else_is_not_an_identity(uri: str) -> None:
    with pytest.raises(IdentityError, match="is not a fedfleet identity"):
        Identity.parse(uri)


def test_a_leaf_carries_its_identity_names_and_chains_to_the_ca() -> None:
    ca = Issuer.generate("ca", 10 * DAY)
    names = tuple(aggregator_dns_names("llm", "team-a"))
    bundle = ca.issue(Identity("team-a", "llm", "aggregator"), DAY, names)
    cert = bundle.certificate
    assert identity_of(cert) == Identity("team-a", "llm", "aggregator")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "llm-aggregator",
        "llm-aggregator.team-a",
        "llm-aggregator.team-a.svc",
        "llm-aggregator.team-a.svc.cluster.local",
    ]
    cert.verify_directly_issued_by(ca.cert)
    assert bundle.ca_pem == ca.cert_pem
    assert set(bundle.secret_data()) == {"tls.crt", "tls.key", "ca.crt"}


def test_a_leaf_never_outlives_its_ca() -> None:
    ca = Issuer.generate("ca", DAY)
    assert ca.issue(CLIENT, 30 * DAY).certificate.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_a_certificate_is_renewed_once_less_than_a_third_of_its_life_is_left() -> None:
    ca = Issuer.generate("ca", 30 * DAY)
    now = datetime.datetime.now(datetime.UTC)
    fresh = ca.issue(CLIENT, 3 * DAY)
    assert renewal_reason(fresh, CLIENT, ca.cert) is None
    assert renewal_reason(fresh, CLIENT, ca.cert, now=now + 1.9 * DAY) is None
    reason = renewal_reason(fresh, CLIENT, ca.cert, now=now + 2.1 * DAY)
    assert reason is not None and reason.startswith("expires at")
    expired = ca.issue(CLIENT, DAY, now=now - 2 * DAY)
    assert str(renewal_reason(expired, CLIENT, ca.cert)).startswith("expired at")


def test_a_certificate_is_renewed_when_it_no_longer_matches_what_would_be_issued() -> None:
    ca, other = Issuer.generate("ca", 30 * DAY), Issuer.generate("other", 30 * DAY)
    bundle = ca.issue(CLIENT, DAY)
    assert renewal_reason(None, CLIENT, ca.cert) == "missing"
    assert renewal_reason(bundle, CLIENT, other.cert) == "issued under another CA"
    moved = Identity.of_client("team-a", "llm", "hospital-2", "hospital-1-0")
    assert str(renewal_reason(bundle, moved, ca.cert)).startswith("identity is spiffe://")
    assert str(renewal_reason(bundle, CLIENT, ca.cert, ("x.svc",))).startswith("DNS names are []")


def test_a_user_issuer_must_be_a_ca_with_its_own_key() -> None:
    ca = Issuer.generate("ca", 30 * DAY)
    leaf = ca.issue(CLIENT, DAY)
    with pytest.raises(IssuerError, match="not a CA certificate"):
        Issuer.from_pem(leaf.cert_pem, leaf.key_pem)
    with pytest.raises(IssuerError, match="does not belong to the certificate"):
        Issuer.from_pem(ca.cert_pem, leaf.key_pem)
    with pytest.raises(IssuerError, match=r"tls\.crt is not a PEM certificate"):
        Issuer.from_pem(b"junk", leaf.key_pem)
    again = Issuer.from_pem(ca.cert_pem, ca.as_bundle().key_pem)
    again.issue(CLIENT, DAY).certificate.verify_directly_issued_by(ca.cert)


def test_a_call_without_a_fedfleet_identity_is_unauthenticated() -> None:
    with pytest.raises(AuthRefusal) as none:
        peer_identity({})
    assert (none.value.code, none.value.reason) == ("UNAUTHENTICATED", "no_certificate")
    ca = Issuer.generate("ca", DAY)
    with pytest.raises(AuthRefusal) as anonymous:  # a certificate of the CA, but no URI SAN
        peer_identity({"x509_pem_cert": [ca.cert_pem]})
    assert (anonymous.value.code, anonymous.value.reason) == ("UNAUTHENTICATED", "no_identity")
    assert "0 URI SANs" in anonymous.value.message
    assert peer_identity({"x509_pem_cert": [ca.issue(CLIENT, DAY).cert_pem]}) == CLIENT


def pems(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def test_a_ca_rotation_trusts_old_and_new_until_every_pod_has_the_new_leaf() -> None:
    now = datetime.datetime.now(datetime.UTC)
    old = Issuer.generate("old", 30 * DAY, now=now - 25 * DAY)  # a sixth of its life left: due
    new = Issuer.generate("new", 30 * DAY)
    t, settle = now.timestamp(), 300.0
    steady = TrustState(old, changed_at=t - 10 * settle)

    introduced, why = advance(steady, t, settle, lambda: new)
    assert why is not None and "trusted beside it" in why
    assert introduced.issuer is old and pems(introduced.bundle) == [old.cert, new.cert]
    assert advance(introduced, t + settle - 1, settle, lambda: new) == (introduced, None)  # still settling

    switched, why = advance(introduced, t + settle, settle, lambda: new)
    assert why is not None and "issues from now on" in why
    assert switched.issuer.cert == new.cert and pems(switched.bundle) == [new.cert, old.cert]
    assert advance(switched, t + 2 * settle - 1, settle, lambda: new)[1] is None

    done, why = advance(switched, t + 2 * settle, settle, lambda: new)
    assert why is not None and "old CA is dropped" in why
    assert pems(done.bundle) == [new.cert]
    assert advance(done, t + 99 * settle, settle, lambda: new)[1] is None
    # the operator keeps the state in the CA's Secret; a restarted operator reads it back
    for state in (introduced, switched, done):
        again = TrustState.from_secret_data(state.secret_data())
        assert (again.issuer.cert, again.bundle, again.changed_at) == (
            state.issuer.cert,
            state.bundle,
            state.changed_at,
        )


def test_an_expired_ca_is_replaced_at_once_as_nothing_trusts_it_any_more() -> None:
    now = datetime.datetime.now(datetime.UTC)
    gone = Issuer.generate("gone", DAY, now=now - 2 * DAY)
    new = Issuer.generate("new", 30 * DAY)
    state, why = advance(TrustState(gone, changed_at=now.timestamp()), now.timestamp(), 300, lambda: new)
    assert why is not None and "expired" in why and pems(state.bundle) == [new.cert]


def test_only_a_changed_trust_bundle_keeps_the_leaf_and_its_key() -> None:
    now = datetime.datetime.now(datetime.UTC)
    old = Issuer.generate("old", 30 * DAY, now=now - 25 * DAY)
    leaf = old.issue(CLIENT, DAY)
    introduced, _ = advance(TrustState(old), now.timestamp(), 300, lambda: Issuer.generate("new", 30 * DAY))
    kept = current_bundle(leaf, introduced.signer, CLIENT, DAY)
    assert (kept.cert_pem, kept.key_pem) == (leaf.cert_pem, leaf.key_pem) and kept.ca_pem == introduced.bundle
    assert current_bundle(kept, introduced.signer, CLIENT, DAY) is kept  # nothing to write
    switched, _ = advance(introduced, now.timestamp() + 300, 300, lambda: Issuer.generate("x", DAY))
    fresh = current_bundle(kept, switched.signer, CLIENT, DAY)
    fresh.certificate.verify_directly_issued_by(switched.issuer.cert)
    assert fresh.ca_pem == switched.bundle
