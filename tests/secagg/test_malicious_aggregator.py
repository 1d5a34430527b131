"""The attacks of a lying aggregator (and of one malicious client), replayed against the
protocol: each ends with the honest clients refusing, and nothing of anyone's input recovered.

The aggregator here is played by the test itself: it holds every message the real server
would, and rewrites what it forwards."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fedfleet.identity.ca import Issuer
from fedfleet.identity.names import Identity
from fedfleet.secagg import (
    AuthenticationFailed,
    InconsistentView,
    OutOfOrder,
    SecAggClient,
    Signer,
    Verifier,
)
from fedfleet.secagg.authentication import long_term_statement
from fedfleet.secagg.client import pair_keys, share_aad
from fedfleet.secagg.crypto import KeyPair, pair_info, unseal
from fedfleet.secagg.messages import (
    Binding,
    EndorsementInbox,
    Endorsements,
    KeyAdvert,
    NeighbourKeys,
    SealedShares,
    SurvivorSet,
)

from tests.secagg.protocol import (
    DAY,
    NAMESPACE,
    Fleet,
    authenticate,
    bound,
    inputs_closed,
    keys_and_shares,
    make_fleet,
    plain,
    reveal,
    upload,
)

LOW_ORDER = (bytes(32), (1).to_bytes(32, "little"))  # the identity and a point of order 1 / 2


def test_an_authenticated_round_releases_the_exact_sum() -> None:
    fleet = inputs_closed(6, 500, neighbours=4)
    reveal(fleet, fleet.ids)
    values, weight = fleet.server.unmask()
    expected, expected_weight = plain(fleet, set(fleet.ids))
    assert np.all(np.abs(values - expected) <= bound(fleet, 6, expected)) and weight == expected_weight


def substitute(fleet: Fleet, victim: str, neighbour: str, **fields: bytes) -> bytes:
    """The aggregator's neighbour list for `victim`, with `neighbour`'s entry rewritten."""
    message = NeighbourKeys.from_bytes(fleet.server.neighbours_payload(victim))
    peers = tuple(p._replace(**fields) if p.client == neighbour else p for p in message.neighbours)
    return replace(message, neighbours=peers).to_bytes()


def advertised(fleet: Fleet) -> None:
    for c in fleet.ids:
        fleet.server.add_keys(c, fleet.clients[c].advertise())
    fleet.server.close_keys()


def test_key_substitution_leaves_the_aggregator_nothing_and_the_neighbours_refuse() -> None:
    """The aggregator hands c00 its own fresh keys in c01's name, to open the shares c00 seals
    to c01 and to learn the mask c00 adds for c01. c00 seals under a key that mixes in the pair
    key of c00's and c01's signed long-term keys, with both clients' fresh keys bound in: the
    aggregator's best guess does not open the shares, and c00 and c01 each refuse the other's
    shares (so neither ever masks with the substituted key)."""
    fleet = make_fleet(5, 100, neighbours=4)
    authenticate(fleet)
    advertised(fleet)
    server, clients, mine = fleet.server, fleet.clients, KeyPair.generate()
    victim = clients["c00"]
    forged = substitute(fleet, "c00", "c01", c_pk=mine.public, s_pk=mine.public)
    sealed = SealedShares.from_bytes(victim.share_keys(forged))
    blob = dict(sealed.shares)["c01"]
    guess = mine.agree(victim.c_keys.public, pair_info("shares", victim.context, "c00", "c01"))
    seen = pair_keys((victim.c_keys.public, victim.s_keys.public), (mine.public, mine.public))
    with pytest.raises(AuthenticationFailed):
        unseal(guess, blob, share_aad(victim.context, "c00", "c01", seen))
    server.add_shares("c00", sealed.to_bytes())
    for c in fleet.ids[1:]:
        server.add_shares(c, clients[c].share_keys(server.neighbours_payload(c)))
    server.close_shares()
    for c, other in (("c00", "c01"), ("c01", "c00")):
        with pytest.raises(AuthenticationFailed, match=f"shares of '{other}' fail authentication"):
            clients[c].receive_shares(server.shares_payload(c))
        assert clients[c].stage == "receive" and not clients[c].held  # never masks with it


def test_a_long_term_key_not_signed_by_the_named_client_makes_the_neighbour_abort() -> None:
    """The aggregator swaps c01's long-term key for its own, dressed up every way it can: c00
    checks the identity signature on it, refuses, and leaves the round sealing nothing."""
    fleet = make_fleet(5, 100, neighbours=4)
    ca = Issuer.generate("the training's CA", DAY)
    keys = authenticate(fleet, ca)
    advertised(fleet)
    mine, other_ca = KeyPair.generate(), Issuer.generate("the aggregator's own CA", DAY)
    aggregator = ca.issue(Identity(NAMESPACE, fleet.training, "aggregator"), DAY)
    forged_c01 = other_ca.issue(Identity.of_client(NAMESPACE, fleet.training, "site", "c01"), DAY)

    def signed_by(signer: Signer) -> dict[str, bytes]:
        signature = signer.sign(long_term_statement("t", "c01", mine.public))
        return {"long_term": mine.public, "credential": signer.credential, "signature": signature}

    attempts = {
        "c01's signature kept": ({"long_term": mine.public}, "not valid"),
        "the aggregator's certificate": (
            signed_by(Signer.from_pem(aggregator.cert_pem, aggregator.key_pem)),
            "signed by the certificate of spiffe://fedfleet.io/ns/ns/training/t/aggregator",
        ),
        "another CA naming c01": (
            signed_by(Signer.from_pem(forged_c01.cert_pem, forged_c01.key_pem)),
            "does not chain to the training's CA",
        ),
        "c02, a real client of the training": (signed_by(keys["c02"].signer), "client/c02"),
        "an ephemeral key, no certificate": (signed_by(Signer.ephemeral()), "needs its certificate"),
    }
    for name, (fields, reason) in attempts.items():
        verifier = fleet.clients["c00"].verifier
        victim = SecAggClient("t", 1, "c00", fleet.params, long_term=keys["c00"], verifier=verifier)
        victim.advertise()
        with pytest.raises(AuthenticationFailed) as err:
            victim.share_keys(substitute(fleet, "c00", "c01", **fields))
        assert "leaving the round" in str(err.value) and reason in str(err.value), name
        assert victim.stage == "aborted" and not victim.neighbours, name  # nothing sealed, to anyone
        with pytest.raises(OutOfOrder):
            victim.share_keys(fleet.server.neighbours_payload("c00"))  # no second chance this round
    fleet.clients["c00"].share_keys(fleet.server.neighbours_payload("c00"))  # the genuine list works


def test_inconsistent_dropout_sets_make_clients_refuse_to_reveal() -> None:
    """The aggregator tells half of c00's neighbours that c00 survived (to collect shares of its
    self mask) and the other half that it dropped (to collect shares of its masking key). Each
    client endorses the one set it was shown; nobody holds t endorsements of its own set, so
    nobody reveals anything."""
    fleet = inputs_closed(8, 200, neighbours=7)  # complete graph, t = 4
    everyone = tuple(fleet.ids)
    without = tuple(c for c in everyone if c != "c00")
    shown = {c: everyone if c in ("c00", "c01", "c02", "c03") else without for c in fleet.ids}
    tags = {
        c: dict(
            Endorsements.from_bytes(
                fleet.clients[c].endorse(SurvivorSet(Binding("t", 1, c), shown[c]).to_bytes())
            ).shares
        )
        for c in fleet.ids
    }
    for c in fleet.ids:  # the aggregator forwards every endorsement addressed to c
        inbox = EndorsementInbox(
            Binding("t", 1, c), tuple((s, tags[s][c]) for s in fleet.ids if c in tags[s])
        )
        with pytest.raises(InconsistentView, match=r"3 neighbours vouch .* fewer than the threshold 4"):
            fleet.clients[c].reveal(inbox.to_bytes())
        assert fleet.clients[c].stage == "aborted"
    # forged endorsements (the aggregator does not hold the pair keys) count for nothing either
    fleet = inputs_closed(8, 200, neighbours=7)
    victim = fleet.clients["c04"]
    victim.endorse(SurvivorSet(Binding("t", 1, "c04"), without).to_bytes())
    forged = EndorsementInbox(Binding("t", 1, "c04"), tuple((s, bytes(32)) for s in without if s != "c04"))
    with pytest.raises(InconsistentView, match="0 neighbours vouch"):
        victim.reveal(forged.to_bytes())


def test_a_clients_own_endorsements_reflected_back_count_for_nothing() -> None:
    """The same split view, but the aggregator answers each client with the tags it sent
    itself, relabelled as coming from the neighbours they were addressed to: a pair's tag
    depends on its direction, so none is valid and nobody reveals."""
    fleet = inputs_closed(8, 200, neighbours=7)
    everyone = tuple(fleet.ids)
    without = tuple(c for c in everyone if c != "c00")
    for c in fleet.ids:
        shown = everyone if c in ("c00", "c01", "c02", "c03") else without
        sent = fleet.clients[c].endorse(SurvivorSet(Binding("t", 1, c), shown).to_bytes())
        reflected = EndorsementInbox(Binding("t", 1, c), Endorsements.from_bytes(sent).shares)
        with pytest.raises(InconsistentView, match="0 neighbours vouch"):
            fleet.clients[c].reveal(reflected.to_bytes())
        assert fleet.clients[c].stage == "aborted"


def test_a_survivor_set_that_cannot_be_true_is_refused() -> None:
    fleet = make_fleet(6, 100, neighbours=5)
    authenticate(fleet)
    keys_and_shares(fleet, skip_shares=["c05"])  # c05 never sent shares: not in U2
    for c in fleet.ids[:5]:
        upload(fleet, c)
    leaves_me_out = SurvivorSet(Binding("t", 1, "c00"), ("c01", "c02", "c03", "c04")).to_bytes()
    with pytest.raises(InconsistentView, match="leaves out this client"):
        fleet.clients["c00"].endorse(leaves_me_out)
    names_a_stranger = SurvivorSet(Binding("t", 1, "c01"), ("c00", "c01", "c02", "c05")).to_bytes()
    with pytest.raises(InconsistentView, match="never sent us shares"):
        fleet.clients["c01"].endorse(names_a_stranger)
    too_few = SurvivorSet(Binding("t", 1, "c02"), ("c00", "c02")).to_bytes()
    with pytest.raises(InconsistentView, match="fewer than the threshold"):
        fleet.clients["c02"].endorse(too_few)


@pytest.mark.parametrize("low", LOW_ORDER, ids=["zero", "one"])
def test_low_order_keys_are_refused_by_the_aggregator_and_neighbours_are_unaffected(low: bytes) -> None:
    """A malicious client signs an advertisement with a low-order masking key (every honest
    neighbour's key agreement would fail): the aggregator refuses it on receipt, and the round
    goes on without that client, the others' sum exact."""
    fleet = make_fleet(6, 300, neighbours=5)
    keys = authenticate(fleet)
    honest = KeyAdvert.from_bytes(fleet.clients["c00"].advertise())
    signed_low = keys["c00"].signer.sign(long_term_statement("t", "c00", low))
    for fields in ({"c_pk": low}, {"s_pk": low}, {"long_term": low, "signature": signed_low}):
        with pytest.raises(AuthenticationFailed, match="low order"):
            fleet.server.add_keys("c00", replace(honest, **fields).to_bytes())
    assert "c00" not in fleet.server.keys
    others = fleet.ids[1:]
    keys_and_shares(fleet, skip_advertise=["c00"])
    for c in others:
        upload(fleet, c)
    fleet.server.close_inputs()
    reveal(fleet, others)
    values, weight = fleet.server.unmask()
    expected, expected_weight = plain(fleet, set(others))
    assert np.all(np.abs(values - expected) <= bound(fleet, 5, expected)) and weight == expected_weight


def test_the_aggregator_refuses_unsigned_or_misattributed_adverts() -> None:
    fleet = make_fleet(4, 50, neighbours=3)
    keys = authenticate(fleet)
    advert = KeyAdvert.from_bytes(fleet.clients["c00"].advertise())
    unsigned = replace(advert, signature=b"").to_bytes()
    with pytest.raises(AuthenticationFailed, match="not valid"):
        fleet.server.add_keys("c00", unsigned)
    as_c01 = replace(advert, credential=keys["c01"].credential).to_bytes()
    with pytest.raises(AuthenticationFailed):
        fleet.server.add_keys("c00", as_c01)
    ephemeral = SecAggClient("t", 1, "c00", fleet.params).advertise()  # no certificate
    with pytest.raises(AuthenticationFailed, match="needs its certificate"):
        fleet.server.add_keys("c00", ephemeral)
    assert fleet.server.keys == {}
    fleet.server.add_keys("c00", advert.to_bytes())


def test_an_expired_or_foreign_certificate_is_refused() -> None:
    ca = Issuer.generate("test CA", DAY)
    verifier = Verifier(ca.trust_pem, NAMESPACE, "t")
    other_training = ca.issue(Identity.of_client(NAMESPACE, "u", "site", "c00"), DAY)
    signer = Signer.from_pem(other_training.cert_pem, other_training.key_pem)
    with pytest.raises(AuthenticationFailed, match="training/u/"):
        verifier.verify("c00", signer.credential, signer.sign(b"x"), b"x")
    import datetime

    old = ca.issue(
        Identity.of_client(NAMESPACE, "t", "site", "c00"),
        DAY,
        now=datetime.datetime.now(datetime.UTC) - 3 * DAY,
    )
    signer = Signer.from_pem(old.cert_pem, old.key_pem)
    with pytest.raises(AuthenticationFailed, match="validity"):
        verifier.verify("c00", signer.credential, signer.sign(b"x"), b"x")
