"""SecAgg+ in narrow lanes: the lane width follows bits + headroom, sums wrap mod 2^lane and
unmask to the plain weighted sum within the quantization bound; weights stay exact."""

from __future__ import annotations

import numpy as np
import pytest
from fedfleet.secagg import MalformedMessage, SecAggParams
from fedfleet.secagg.masks import Keystream, Scratch
from fedfleet.secagg.params import lane_for

from tests.secagg.protocol import bound, keys_and_shares, make_fleet, plain, run_round


@pytest.mark.parametrize(
    ("bits", "n", "lane"),
    [(0, 4, 32), (16, 4, 32), (8, 4, 16), (8, 128, 16), (8, 256, 32), (4, 4, 8), (4, 15, 8), (4, 16, 16)],
)
def test_the_lane_is_the_narrowest_that_n_codes_of_bits_fit(bits: int, n: int, lane: int) -> None:
    assert lane_for(bits, n) == lane
    p = SecAggParams.build(n, lane=lane)
    assert p.lane_dtype == np.dtype(f"uint{lane}")
    assert n * (p.levels + 1) <= 2**lane - 1  # n codes plus their rounding headroom cannot wrap


@pytest.mark.parametrize(("n", "lane"), [(4, 16), (10, 16), (4, 8), (6, 8)])
def test_a_narrow_lane_round_unmasks_to_the_weighted_sum(n: int, lane: int) -> None:
    fleet = make_fleet(n, 3_001, seed=n + lane, lane=lane)
    assert fleet.params.lane_bits == lane
    values, weight = run_round(fleet, chunk=701, shuffle_seed=1)
    expected, expected_weight = plain(fleet, set(fleet.ids))
    assert np.all(np.abs(values - expected) <= bound(fleet, n, expected))
    assert weight == expected_weight  # integer counts stay exact, in digits if need be
    words = fleet.params.weight_words
    assert (words > 1) == (lane == 8)  # 8-bit lanes cannot hold n counts up to 1000 in one


def test_narrow_lanes_shrink_the_upload_and_still_look_uniform() -> None:
    fleet = make_fleet(4, 20_000, seed=5, lane=8)
    keys_and_shares(fleet)
    client = fleet.clients[fleet.ids[0]]
    client.receive_shares(fleet.server.shares_payload(fleet.ids[0]))
    masked = client.mask_update(fleet.updates[fleet.ids[0]], fleet.weights[fleet.ids[0]])
    assert masked.dtype == np.uint8 and masked.nbytes == 20_000 + fleet.params.weight_words
    counts = np.bincount(masked, minlength=256)
    chi2 = float(((counts - len(masked) / 256) ** 2 / (len(masked) / 256)).sum())
    assert chi2 < 350  # 255 degrees of freedom: p ~ 1e-4


def test_masks_in_narrow_lanes_are_the_same_keystream_read_narrower() -> None:
    stream, scratch = Keystream(b"k" * 16), Scratch(64)
    words = stream.fill(scratch, 0, 40).copy()
    halves = Keystream(b"k" * 16).fill(scratch, 5, 51, np.dtype(np.uint16)).copy()
    np.testing.assert_array_equal(halves, words.view(np.uint16)[5:56])
    octets = Keystream(b"k" * 16).fill(scratch, 13, 50, np.dtype(np.uint8)).copy()
    np.testing.assert_array_equal(octets, words.view(np.uint8)[13:63])


def test_the_server_refuses_chunks_of_another_lane_width() -> None:
    fleet = make_fleet(4, 100, seed=1, lane=16)
    keys_and_shares(fleet)
    c = fleet.ids[0]
    with pytest.raises(MalformedMessage, match="1-d array of uint16"):
        fleet.server.add_chunk(c, 0, np.zeros(10, np.uint32))
    with pytest.raises(MalformedMessage, match="3 bytes is not whole uint16"):
        fleet.server.add_chunk(c, 0, b"abc")
    assert not fleet.server.accumulator.any()  # type: ignore[union-attr]


def test_a_lane_too_narrow_for_the_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit in 8-bit lanes"):
        SecAggParams.build(4, bits=8, lane=8)
    with pytest.raises(ValueError, match="lane=12"):
        SecAggParams.build(4, lane=12)
    with pytest.raises(ValueError, match="room for 300"):
        SecAggParams.build(300, lane=8)
