"""Every refusal: a specific exception (with its gRPC status), a clear message, and no change
of state: each test finishes the round afterwards and checks the sum is still exact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from fedfleet.secagg import (
    AuthenticationFailed,
    ForbiddenReveal,
    MalformedMessage,
    NotAuthorized,
    OutOfOrder,
    OversizedMessage,
    ProtocolError,
    ReplayedMessage,
    SecAggClient,
    WrongBinding,
)
from fedfleet.secagg.messages import (
    Binding,
    Endorsements,
    KeyAdvert,
    NeighbourKeys,
    Reveal,
    SealedShares,
    ShareInbox,
    ShareKind,
    SurvivorSet,
)

from tests.secagg.protocol import Fleet, bound, keys_and_shares, make_fleet, plain, upload

N, M = 5, 1_000


def refused(kind: type[ProtocolError], code: str, call: Callable[..., object], *args: object) -> str:
    with pytest.raises(kind) as err:
        call(*args)
    assert err.value.code == code, err.value
    return str(err.value)


def finish(fleet: Fleet) -> None:
    """Complete whatever stage the round is at, then check the released sum."""
    server, clients = fleet.server, fleet.clients
    if server.stage == "keys":
        for c in fleet.ids:
            if c not in server.keys:
                server.add_keys(c, clients[c].advertise())
        server.close_keys()
    if server.stage == "shares":
        for c in fleet.ids:
            if c not in server.sealed:
                server.add_shares(c, clients[c].share_keys(server.neighbours_payload(c)))
        server.close_shares()
    if server.stage == "inputs":
        for c in fleet.ids:
            if c not in server.uploaded():
                upload(fleet, c)
        server.close_inputs()
    if server.stage == "consistency":
        for c in sorted(server.u3 - server.endorsements.keys()):
            server.add_endorsements(c, clients[c].endorse(server.survivors_for(c)))
        server.close_consistency()
    for c in sorted(server.endorsements.keys() - server.reveals):
        server.add_reveal(c, clients[c].reveal(server.endorsements_for(c)))
    values, weight = server.unmask()
    expected, expected_weight = plain(fleet, set(fleet.ids))
    assert np.all(np.abs(values - expected) <= bound(fleet, N, expected))
    assert weight == expected_weight


@pytest.fixture
def fleet() -> Fleet:
    return make_fleet(N, M, neighbours=N - 1)


def test_key_stage_refusals(fleet: Fleet) -> None:
    server, clients = fleet.server, fleet.clients
    advert = clients["c00"].advertise()
    server.add_keys("c00", advert)
    assert "already advertised" in refused(ReplayedMessage, "ALREADY_EXISTS", server.add_keys, "c00", advert)
    other = clients["c01"].advertise()
    assert "not a participant" in refused(NotAuthorized, "PERMISSION_DENIED", server.add_keys, "zz", other)
    assert "sent by 'c02'" in refused(NotAuthorized, "PERMISSION_DENIED", server.add_keys, "c02", other)
    assert "not open" in refused(OutOfOrder, "FAILED_PRECONDITION", server.add_shares, "c01", b"")
    # a key advert replayed from another round or training, or made with other parameters
    next_round = SecAggClient("t", 2, "c01", fleet.params).advertise()
    assert "round 2" in refused(WrongBinding, "FAILED_PRECONDITION", server.add_keys, "c01", next_round)
    other_training = SecAggClient("u", 1, "c01", fleet.params).advertise()
    assert "'u'" in refused(WrongBinding, "FAILED_PRECONDITION", server.add_keys, "c01", other_training)
    other_params = SecAggClient("t", 1, "c01", replace(fleet.params, clip=2.0)).advertise()
    assert "parameters" in refused(WrongBinding, "FAILED_PRECONDITION", server.add_keys, "c01", other_params)
    # the same public key twice (reused keys)
    decoded = KeyAdvert.from_bytes(other)
    reused = replace(decoded, s_pk=KeyAdvert.from_bytes(advert).s_pk).to_bytes()
    assert "fresh" in refused(ReplayedMessage, "ALREADY_EXISTS", server.add_keys, "c01", reused)
    server.add_keys("c01", other)
    finish(fleet)
    assert "not open" in refused(OutOfOrder, "FAILED_PRECONDITION", server.add_keys, "c02", other)


def test_malformed_and_oversized_messages(fleet: Fleet) -> None:
    server, clients = fleet.server, fleet.clients
    advert = clients["c00"].advertise()
    cases = {
        b"": "truncated",
        b"\x00garbage": "bad magic",
        b'{"context": "x"}': "bad magic",
        advert[:-1]: "truncated",
        advert + b"\x00": "trailing",
        advert[:2] + b"\x09" + advert[3:]: "format 9",
        advert[:3] + bytes([SealedShares.KIND]) + advert[4:]: "expected a KEYS message, got SHARES",
        advert[:4] + b"\x00" + advert[5:]: "empty id",
        advert[:5] + b"\xff" + advert[6:]: "not UTF-8",
    }
    for payload, reason in cases.items():
        assert reason in refused(MalformedMessage, "INVALID_ARGUMENT", server.add_keys, "c00", payload)
    huge = advert + bytes(5 * 1024 * 1024)
    assert "exceeds" in refused(OversizedMessage, "RESOURCE_EXHAUSTED", server.add_keys, "c00", huge)
    assert server.keys == {}
    server.add_keys("c00", advert)
    finish(fleet)


def test_share_stage_refusals(fleet: Fleet) -> None:
    server, clients = fleet.server, fleet.clients
    for c in fleet.ids:
        server.add_keys(c, clients[c].advertise())
    server.close_keys()
    c0 = clients["c00"]
    # the neighbour list of another client, and a second neighbour list
    wrong = server.neighbours_payload("c01")
    assert "client 'c01'" in refused(WrongBinding, "FAILED_PRECONDITION", c0.share_keys, wrong)
    sent = c0.share_keys(server.neighbours_payload("c00"))
    again = server.neighbours_payload("c00")
    assert "stage" in refused(OutOfOrder, "FAILED_PRECONDITION", c0.share_keys, again)
    server.add_shares("c00", sent)
    assert "already sent" in refused(ReplayedMessage, "ALREADY_EXISTS", server.add_shares, "c00", sent)
    c1 = clients["c01"]
    shares = SealedShares.from_bytes(c1.share_keys(server.neighbours_payload("c01")))
    missing = replace(shares, shares=shares.shares[1:]).to_bytes()
    assert "exactly once" in refused(MalformedMessage, "INVALID_ARGUMENT", server.add_shares, "c01", missing)
    twice = replace(shares, shares=(*shares.shares, shares.shares[0])).to_bytes()
    assert "at most 4" in refused(OversizedMessage, "RESOURCE_EXHAUSTED", server.add_shares, "c01", twice)
    posing = replace(shares, binding=Binding("t", 1, "c02")).to_bytes()
    assert "sent by" in refused(NotAuthorized, "PERMISSION_DENIED", server.add_shares, "c01", posing)
    server.add_shares("c01", shares.to_bytes())
    assert "once they close" in refused(OutOfOrder, "FAILED_PRECONDITION", server.shares_payload, "c00")
    finish(fleet)


def test_inbox_refusals_and_tampered_shares(fleet: Fleet) -> None:
    keys_and_shares(fleet)
    server, c1 = fleet.server, fleet.clients["c01"]
    inbox = ShareInbox.from_bytes(server.shares_payload("c01"))
    sender, blob = inbox.shares[0]
    flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    tampered = replace(inbox, shares=((sender, flipped), *inbox.shares[1:])).to_bytes()
    assert "authentication" in refused(AuthenticationFailed, "PERMISSION_DENIED", c1.receive_shares, tampered)
    # a share sealed for c02, redirected to c01: the associated data names the receiver
    redirected = replace(
        inbox, shares=((sender, ShareInbox.from_bytes(server.shares_payload("c02")).shares[0][1]),)
    )
    assert "authentication" in refused(
        AuthenticationFailed, "PERMISSION_DENIED", c1.receive_shares, redirected.to_bytes()
    )
    stranger = replace(inbox, shares=(("c99", blob),)).to_bytes()
    assert "not our neighbour" in refused(NotAuthorized, "PERMISSION_DENIED", c1.receive_shares, stranger)
    doubled = replace(inbox, shares=(inbox.shares[0], inbox.shares[0], *inbox.shares[2:])).to_bytes()
    assert "two shares" in refused(ReplayedMessage, "ALREADY_EXISTS", c1.receive_shares, doubled)
    old_round = replace(inbox, binding=Binding("t", 0, "c01")).to_bytes()
    assert "round 0" in refused(WrongBinding, "FAILED_PRECONDITION", c1.receive_shares, old_round)
    assert c1.stage == "receive"  # nothing above moved the client on
    finish(fleet)


def test_chunk_refusals(fleet: Fleet) -> None:
    server, clients = fleet.server, fleet.clients
    early = np.zeros(10, np.uint32)
    assert "not open" in refused(OutOfOrder, "FAILED_PRECONDITION", server.add_chunk, "c00", 0, early)
    keys_and_shares(fleet)
    c0 = clients["c00"]
    c0.receive_shares(server.shares_payload("c00"))
    c0.start_upload(M, fleet.weights["c00"])
    first = c0.mask_chunk(0, fleet.updates["c00"][:600])
    server.add_chunk("c00", 0, first)
    assert "overlap" in refused(ReplayedMessage, "ALREADY_EXISTS", server.add_chunk, "c00", 0, first)
    assert "overlap" in refused(ReplayedMessage, "ALREADY_EXISTS", server.add_chunk, "c00", 599, first[:2])
    # the client refuses to mask words twice (a one-time pad reused on other data)
    assert "already masked" in refused(
        ReplayedMessage, "ALREADY_EXISTS", c0.mask_chunk, 500, fleet.updates["c00"][500:700]
    )
    rest = c0.mask_chunk(600, fleet.updates["c00"][600:])
    assert "outside" in refused(
        MalformedMessage, "INVALID_ARGUMENT", server.add_chunk, "c00", 600, np.r_[rest, 1, 2]
    )
    assert "outside" in refused(MalformedMessage, "INVALID_ARGUMENT", server.add_chunk, "c00", -1, rest)
    assert "uint32" in refused(
        MalformedMessage, "INVALID_ARGUMENT", server.add_chunk, "c00", 600, rest.astype(np.int64)
    )
    assert "whole uint32" in refused(
        MalformedMessage, "INVALID_ARGUMENT", server.add_chunk, "c00", 600, b"abc"
    )
    small = replace(fleet.params, max_chunk_words=100)
    fleet.server.params = small
    assert "exceeds 100" in refused(
        OversizedMessage, "RESOURCE_EXHAUSTED", server.add_chunk, "c00", 600, rest
    )
    fleet.server.params = replace(small, max_chunk_words=1 << 22)
    server.add_chunk("c00", 600, rest.tobytes())  # zero-copy bytes are accepted
    weight = c0.weight_words()
    assert "already masked" in refused(ReplayedMessage, "ALREADY_EXISTS", c0.weight_words)
    server.add_chunk("c00", M, weight)
    assert "not a participant" in refused(NotAuthorized, "PERMISSION_DENIED", server.add_chunk, "zz", 0, rest)
    finish(fleet)
    assert "not open" in refused(OutOfOrder, "FAILED_PRECONDITION", server.add_chunk, "c01", 0, rest)


def test_late_upload_from_a_client_that_did_not_share_is_refused() -> None:
    fleet = make_fleet(6, 200, neighbours=5)
    keys_and_shares(fleet, skip_shares=["c05"])
    words = np.zeros(201, np.uint32)
    assert "did not share" in refused(
        OutOfOrder, "FAILED_PRECONDITION", fleet.server.add_chunk, "c05", 0, words
    )
    assert "did not share" in refused(OutOfOrder, "FAILED_PRECONDITION", fleet.server.shares_payload, "c05")


def test_consistency_and_reveal_refusals_on_both_sides() -> None:
    fleet = make_fleet(N, M, neighbours=N - 1)
    keys_and_shares(fleet)
    server, clients = fleet.server, fleet.clients
    for c in fleet.ids[:4]:  # c04 drops after sharing: its key shares are needed
        upload(fleet, c)
    c0 = clients["c00"]
    assert "fixed when inputs close" in refused(
        OutOfOrder, "FAILED_PRECONDITION", server.survivors_for, "c00"
    )
    server.close_inputs()
    survivors = SurvivorSet.from_bytes(server.survivors_for("c00"))
    assert survivors.survivors == ("c00", "c01", "c02", "c03")
    assert "no masked upload" in refused(OutOfOrder, "FAILED_PRECONDITION", server.survivors_for, "c04")
    # client side: the right round only, a well-formed set (neither refusal ends its round)
    other_round = replace(survivors, binding=Binding("t", 2, "c00")).to_bytes()
    assert "round 2" in refused(WrongBinding, "FAILED_PRECONDITION", c0.endorse, other_round)
    shuffled = replace(survivors, survivors=("c01", "c00", "c02", "c03")).to_bytes()
    assert "in order" in refused(MalformedMessage, "INVALID_ARGUMENT", c0.endorse, shuffled)
    endorsed = c0.endorse(survivors.to_bytes())
    assert "stage 'upload'" in refused(OutOfOrder, "FAILED_PRECONDITION", c0.endorse, survivors.to_bytes())
    # server side: each survivor endorses once, for its surviving neighbours only
    server.add_endorsements("c00", endorsed)
    assert "already endorsed" in refused(
        ReplayedMessage, "ALREADY_EXISTS", server.add_endorsements, "c00", endorsed
    )
    tags = Endorsements.from_bytes(clients["c01"].endorse(server.survivors_for("c01")))
    to_dropped = replace(tags, shares=(*tags.shares[:2], ("c04", tags.shares[0][1]))).to_bytes()
    assert "surviving neighbours" in refused(
        MalformedMessage, "INVALID_ARGUMENT", server.add_endorsements, "c01", to_dropped
    )
    assert "no masked upload" in refused(
        OutOfOrder, "FAILED_PRECONDITION", server.add_endorsements, "c04", tags.to_bytes()
    )
    server.add_endorsements("c01", tags.to_bytes())
    assert "not open" in refused(OutOfOrder, "FAILED_PRECONDITION", server.endorsements_for, "c00")
    for c in ("c02", "c03"):
        server.add_endorsements(c, clients[c].endorse(server.survivors_for(c)))
    server.close_consistency()
    inbox = server.endorsements_for("c00")
    honest = c0.reveal(inbox)
    # the client chose the kinds itself, from the one set it endorsed: b of survivors, s_sk of c04
    shares = Reveal.from_bytes(honest)
    assert [(o, k) for o, k, _ in shares.shares] == [
        ("c01", ShareKind.SELF_MASK),
        ("c02", ShareKind.SELF_MASK),
        ("c03", ShareKind.SELF_MASK),
        ("c04", ShareKind.MASK_KEY),
    ]
    assert "already revealed" in refused(ReplayedMessage, "ALREADY_EXISTS", c0.reveal, inbox)
    # server side: only the kind the survivor set allows, each owner once, all of them, once per client
    swapped = tuple(
        (owner, ShareKind.SELF_MASK if kind == ShareKind.MASK_KEY else kind, share)
        for owner, kind, share in shares.shares
    )
    greedy = replace(shares, shares=swapped).to_bytes()  # c04's self mask instead of its key
    assert "only its MASK_KEY share" in refused(
        ForbiddenReveal, "PERMISSION_DENIED", server.add_reveal, "c00", greedy
    )
    doubled = replace(
        shares, shares=(*shares.shares, ("c04", ShareKind.SELF_MASK, shares.shares[0][2]))
    ).to_bytes()
    assert "at most 4" in refused(OversizedMessage, "RESOURCE_EXHAUSTED", server.add_reveal, "c00", doubled)
    twice = replace(
        shares, shares=(*shares.shares[:3], ("c01", ShareKind.MASK_KEY, shares.shares[0][2]))
    ).to_bytes()
    assert "twice" in refused(ForbiddenReveal, "PERMISSION_DENIED", server.add_reveal, "c00", twice)
    short = replace(shares, shares=shares.shares[:3]).to_bytes()
    assert "misses shares of c04" in refused(
        MalformedMessage, "INVALID_ARGUMENT", server.add_reveal, "c00", short
    )
    bad = replace(shares, shares=(("c01", ShareKind.SELF_MASK, b"\xff" * 32), *shares.shares[1:])).to_bytes()
    assert "field element" in refused(MalformedMessage, "INVALID_ARGUMENT", server.add_reveal, "c00", bad)
    assert "sent by" in refused(NotAuthorized, "PERMISSION_DENIED", server.add_reveal, "c01", honest)
    server.add_reveal("c00", honest)
    assert "already revealed" in refused(ReplayedMessage, "ALREADY_EXISTS", server.add_reveal, "c00", honest)
    assert "did not endorse" in refused(OutOfOrder, "FAILED_PRECONDITION", server.endorsements_for, "c04")
    for c in fleet.ids[1:4]:
        server.add_reveal(c, clients[c].reveal(server.endorsements_for(c)))
    values, weight = server.unmask()
    expected, expected_weight = plain(fleet, set(fleet.ids[:4]))
    assert np.all(np.abs(values - expected) <= bound(fleet, 4, expected))
    assert weight == expected_weight
    assert "cannot unmask" in refused(OutOfOrder, "FAILED_PRECONDITION", server.unmask)


def test_client_steps_out_of_order() -> None:
    fleet = make_fleet(4, 50)
    c = fleet.clients["c00"]
    assert "stage 'share'" in refused(OutOfOrder, "FAILED_PRECONDITION", c.share_keys, b"")
    assert "stage 'upload'" in refused(
        OutOfOrder, "FAILED_PRECONDITION", c.mask_chunk, 0, np.zeros(3, np.float32)
    )
    c.advertise()
    assert "stage 'advertise'" in refused(OutOfOrder, "FAILED_PRECONDITION", c.advertise)
    fleet = make_fleet(4, 50)
    keys_and_shares(fleet)
    c1 = fleet.clients["c01"]
    c1.receive_shares(fleet.server.shares_payload("c01"))
    c1.start_upload(50, 3.0)
    c1.mask_chunk(0, fleet.updates["c01"])  # the weight word is still missing
    survivors = SurvivorSet(Binding("t", 1, "c01"), tuple(fleet.ids)).to_bytes()
    assert "upload was complete" in refused(OutOfOrder, "FAILED_PRECONDITION", c1.endorse, survivors)
    assert "stage 'endorsed'" in refused(OutOfOrder, "FAILED_PRECONDITION", c1.reveal, b"")


def test_neighbour_list_checks() -> None:
    fleet = make_fleet(4, 50, neighbours=3)
    for c in fleet.ids:
        fleet.server.add_keys(c, fleet.clients[c].advertise())
    fleet.server.close_keys()
    message = NeighbourKeys.from_bytes(fleet.server.neighbours_payload("c00"))
    c0 = fleet.clients["c00"]
    repeated = replace(
        message, neighbours=(message.neighbours[0], message.neighbours[0], message.neighbours[1])
    )
    assert "repeats" in refused(MalformedMessage, "INVALID_ARGUMENT", c0.share_keys, repeated.to_bytes())
    too_many = replace(message, neighbours=(*message.neighbours, message.neighbours[0]))
    assert "at most 3" in refused(OversizedMessage, "RESOURCE_EXHAUSTED", c0.share_keys, too_many.to_bytes())
    c0.share_keys(message.to_bytes())
