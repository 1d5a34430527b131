"""What the aggregator sees of one client: masked words that look uniform and hide the update."""

from __future__ import annotations

import numpy as np
from fedfleet.secagg import SecAggParams
from fedfleet.secagg.masks import thread_scratch
from fedfleet.secagg.quantize import Encoder
from scipy import stats

from tests.secagg.protocol import keys_and_shares, make_fleet

M = 50_000


def masked_upload(fleet_seed: int = 0) -> tuple[np.ndarray, np.ndarray, SecAggParams]:
    fleet = make_fleet(5, M, seed=fleet_seed, neighbours=4)
    keys_and_shares(fleet)
    client = fleet.clients["c00"]
    client.receive_shares(fleet.server.shares_payload("c00"))
    update = np.full(M, 0.25, dtype=np.float32)  # maximally structured
    masked = client.mask_update(update, 500.0)
    plain = np.empty(M, np.uint32)
    Encoder(fleet.params, 500.0).encode(update, plain, 0, thread_scratch(M))
    return masked, plain, fleet.params


def test_a_masked_upload_alone_looks_uniform() -> None:
    masked, plain, _ = masked_upload()
    for data in (masked.view(np.uint8), (masked >> 24).astype(np.uint8)):  # every byte, and top bytes
        counts = np.bincount(data, minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-6
    # the plain code is nowhere near uniform
    assert stats.chisquare(np.bincount(plain.view(np.uint8), minlength=256)).pvalue < 1e-12


def test_a_masked_upload_does_not_equal_or_track_the_plain_code() -> None:
    masked, plain, _ = masked_upload()
    words = masked[:M]
    assert np.mean(words == plain) < 1e-3
    assert abs(np.corrcoef(words.astype(np.float64), plain.astype(np.float64))[0, 1]) < 0.03
    # stochastic rounding gives two neighbouring codes; masking spreads them over 2^32
    assert len(np.unique(plain)) <= 2 and len(np.unique(words)) > M * 0.99


def test_fresh_keys_every_round_give_unrelated_masks() -> None:
    first, _, _ = masked_upload(fleet_seed=0)
    second, _, _ = masked_upload(fleet_seed=0)  # same update, same weight, a new round's keys
    assert np.mean(first == second) < 1e-3
    difference = (first - second).view(np.uint8)  # the masks do not cancel between rounds
    assert stats.chisquare(np.bincount(difference, minlength=256)).pvalue > 1e-6
