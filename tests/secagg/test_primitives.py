"""Building blocks: Shamir sharing, seekable AES-CTR masks, the graph, keys, the wire format."""

from __future__ import annotations

import contextlib
import itertools
import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fedfleet.secagg import MalformedMessage, OversizedMessage, ProtocolError, SecAggParams, shamir
from fedfleet.secagg.crypto import (
    LOW_ORDER_U,
    SEALED_SHARE_BYTES,
    X25519_PRIME,
    KeyPair,
    check_public_key,
    endorsements,
    pair_info,
)
from fedfleet.secagg.graph import neighbour_graph, usable_degree
from fedfleet.secagg.masks import Keystream, MaskExpander, Scratch
from fedfleet.secagg.messages import (
    Binding,
    EndorsementInbox,
    Endorsements,
    KeyAdvert,
    Neighbour,
    NeighbourKeys,
    Reveal,
    SealedShares,
    ShareInbox,
    ShareKind,
    SurvivorSet,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_shamir_any_t_shares_recover_and_fewer_do_not() -> None:
    secret = shamir.random_secret()
    holders = list(range(1, 11))
    shares = shamir.split(secret, 4, holders)
    for subset in itertools.islice(itertools.combinations(holders, 4), 0, None, 17):
        assert shamir.combine({x: shares[x] for x in subset}, 4) == secret
    assert shamir.combine({x: shares[x] for x in holders[:3]}, 3) != secret  # t - 1 shares: wrong
    with pytest.raises(ValueError, match="3 shares, 4 needed"):
        shamir.combine({x: shares[x] for x in holders[:3]}, 4)
    with pytest.raises(ValueError, match="below the field prime"):
        shamir.split(b"\xff" * 32, 2, [1, 2])
    assert shamir.lagrange_at_zero.cache_info().currsize > 0  # cached per holder set


def test_masks_are_aes_ctr_and_seekable() -> None:
    seed = bytes(range(32))
    reference = Cipher(algorithms.AES(seed[:16]), modes.CTR(bytes(16))).encryptor().update(bytes(4 * 10_007))
    expander = MaskExpander(block_words=256)
    whole = expander.words(seed, 0, 10_007)
    np.testing.assert_array_equal(whole, np.frombuffer(reference, dtype=np.uint32))
    for offset, size in [(0, 3), (1, 4), (5, 1_000), (4_093, 5_914), (257, 256), (10_006, 1)]:
        np.testing.assert_array_equal(expander.words(seed, offset, size), whole[offset : offset + size])
    # a stream continues where it stopped, and re-seeks anywhere
    stream, scratch = Keystream(seed), Scratch(256)
    got = [stream.fill(scratch, o, n).copy() for o, n in [(3, 5), (8, 100), (2, 7), (9, 200)]]
    for (o, n), words in zip([(3, 5), (8, 100), (2, 7), (9, 200)], got, strict=True):
        np.testing.assert_array_equal(words, whole[o : o + n])
    out = whole[:100].copy()
    expander.apply(seed, out, 0, subtract=True)
    assert not out.any()  # adding then subtracting one mask is the identity mod 2^32


@pytest.mark.parametrize(("n", "k"), [(3, 2), (10, 9), (10, 7), (11, 6), (50, 12), (100, 14)])
def test_graph_is_k_regular_symmetric_and_fixed_by_its_seed(n: int, k: int) -> None:
    clients = [f"c{i}" for i in range(n)]
    graph = neighbour_graph(clients, k, b"seed")
    assert all(len(peers) == k and c not in peers for c, peers in graph.items())
    assert all(c in graph[p] for c, peers in graph.items() for p in peers)
    assert neighbour_graph(list(reversed(clients)), k, b"seed") == graph
    if k < n - 1:
        assert neighbour_graph(clients, k, b"other") != graph
    assert usable_degree(7, 11) == 6 and usable_degree(20, 5) == 4
    with pytest.raises(ValueError, match="regular"):
        neighbour_graph(clients[:5], 3, b"seed")


def test_pair_keys_agree_and_are_bound_to_round_and_pair() -> None:
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    info = pair_info("mask", b"round 1", "a", "b")
    assert a.agree(b.public, info) == b.agree(a.public, pair_info("mask", b"round 1", "b", "a"))
    assert a.agree(b.public, info) != a.agree(b.public, pair_info("mask", b"round 2", "a", "b"))
    assert a.agree(b.public, info) != a.agree(c.public, info)
    assert KeyPair.from_private_bytes(a.private_bytes()).public == a.public
    assert int.from_bytes(a.private_bytes(), "big") < shamir.PRIME  # shareable as it is
    with pytest.raises(ProtocolError, match="unusable"):
        a.agree(bytes(32), info)  # a low-order point


def _x25519_refuses(raw: bytes) -> bool:
    """The reference: X25519 itself gives the all-zero secret (refused by `exchange`)."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return True
    return False


def _refused(raw: bytes) -> bool:
    try:
        check_public_key(raw)
    except ProtocolError:
        return True
    return False


def test_every_encoding_of_a_low_order_point_is_refused_as_x25519_would() -> None:
    """Each low-order u, canonical, with the top bit (ignored by X25519) set, and plus p where
    that still fits in 255 bits (non-canonical): all refused, as X25519 itself would."""
    encodings = [
        v.to_bytes(32, "little")
        for u in LOW_ORDER_U
        for v in (u, u | 1 << 255, u + X25519_PRIME, (u + X25519_PRIME) | 1 << 255)
        if v < 1 << 256 and (v & ((1 << 255) - 1)) % X25519_PRIME == u
    ]
    assert len(encodings) == 2 * len(LOW_ORDER_U) + 4  # 0 + p and 1 + p fit below 2^255
    for raw in encodings:
        assert _refused(raw) and _x25519_refuses(raw), raw.hex()
    assert _refused(bytes(31)) and _refused(bytes(33))
    assert not _refused(KeyPair.generate().public)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_the_low_order_check_agrees_with_x25519(raw: bytes) -> None:
    assert _refused(raw) == _x25519_refuses(raw)


def test_endorsement_tags_differ_by_direction_and_agree_between_the_pair() -> None:
    key, digest = bytes(range(32)), bytes(32)
    a_to_b, b_to_a = endorsements(key, "a", "b", digest)
    assert endorsements(key, "b", "a", digest) == (b_to_a, a_to_b)  # what b computes
    assert a_to_b != b_to_a and len(a_to_b) == len(b_to_a) == 32
    assert endorsements(key, "a", "b", bytes(31) + b"\x01") != (a_to_b, b_to_a)
    assert endorsements(bytes(32), "a", "b", digest) != (a_to_b, b_to_a)


def messages() -> list[object]:
    b = Binding("training-é", 2**40, "site-a-0")
    key, share = bytes(range(32)), bytes(range(32, 64))
    sealed = bytes(SEALED_SHARE_BYTES)
    return [
        KeyAdvert(b, key, share, b"12345678", 7, share, b"\x01credential", b"signature"),
        NeighbourKeys(
            b, 3, (Neighbour("x", 1, key, share, key, b"cred", b"sig"), Neighbour("y", 2, share, key))
        ),
        NeighbourKeys(b, 1, ()),
        SealedShares(b, (("x", sealed), ("y", sealed))),
        ShareInbox(b, (("x", sealed),)),
        SurvivorSet(b, ("x", "y", "z")),
        Endorsements(b, (("x", key), ("y", share))),
        EndorsementInbox(b, (("x", key),)),
        Reveal(b, (("x", ShareKind.MASK_KEY, share),)),
    ]


@pytest.mark.parametrize("message", messages(), ids=lambda m: type(m).__name__)
def test_messages_round_trip_and_reject_every_mangling(message: object) -> None:
    kind = type(message)
    raw = message.to_bytes()  # type: ignore[attr-defined]
    assert kind.from_bytes(raw) == message  # type: ignore[attr-defined]
    assert raw[:2] == b"SA"
    for cut in range(len(raw)):  # every truncation
        with pytest.raises(MalformedMessage):
            kind.from_bytes(raw[:cut])  # type: ignore[attr-defined]
    with pytest.raises(MalformedMessage, match="trailing"):
        kind.from_bytes(raw + b"\x00")  # type: ignore[attr-defined]
    rng = random.Random(len(raw))
    for _ in range(300):  # random corruption: a clean refusal or a decodable message, never a crash
        mangled = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        with contextlib.suppress(ProtocolError):
            kind.from_bytes(bytes(mangled))  # type: ignore[attr-defined]


def test_message_limits() -> None:
    b = Binding("t", 1, "c")
    many = SurvivorSet(b, tuple(f"c{i}" for i in range(10))).to_bytes()
    with pytest.raises(OversizedMessage, match="at most 9"):
        SurvivorSet.from_bytes(many, max_entries=9)
    lying = many[: len(many) - 40]  # the count promises more entries than the bytes hold
    with pytest.raises(MalformedMessage):
        SurvivorSet.from_bytes(lying)
    with pytest.raises(MalformedMessage, match="not str"):
        SurvivorSet.from_bytes("text")  # type: ignore[arg-type]
    huge = KeyAdvert(b, bytes(32), bytes(32), bytes(8), 0, bytes(32), b"\x01" + bytes(20_000)).to_bytes()
    with pytest.raises(OversizedMessage, match="at most 16384"):
        KeyAdvert.from_bytes(huge)
    with pytest.raises(ValueError, match="ids are"):
        KeyAdvert(Binding("t", 1, "x" * 256), bytes(32), bytes(32), bytes(8)).to_bytes()


def test_weight_codes_are_exact_for_counts_and_unbiased_otherwise() -> None:
    from fedfleet.secagg.quantize import Encoder

    p = SecAggParams.build(10, max_weight=1_000)
    assert p.weight_scale == 1.0
    assert Encoder(p, 417.0).weight_code() == 417 and Encoder(p, 5_000.0).weight_code() == 1_000
    codes = [Encoder(p, 2.25).weight_code() for _ in range(4_000)]
    assert set(codes) == {2, 3} and abs(np.mean(codes) - 2.25) < 0.03
    big = SecAggParams.build(10, max_weight=1e9)
    assert big.weight_scale < 1 and Encoder(big, 1e9).weight_code() <= big.levels + 1
