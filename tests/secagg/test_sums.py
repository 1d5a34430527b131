"""Unmasked results equal the plain weighted sum within the quantization bound."""

from __future__ import annotations

import numpy as np
import pytest
from fedfleet.secagg import SecAggClient, SecAggParams
from fedfleet.secagg.params import derive_neighbours, failure_bound, threshold_for

from tests.secagg.protocol import Fleet, bound, keys_and_shares, make_fleet, plain, reveal, run_round


def check(fleet: Fleet, values: np.ndarray, weight: float, members: set[str]) -> None:
    expected, expected_weight = plain(fleet, members)
    assert values.dtype == np.float32 and values.shape == (fleet.dimension,)
    assert np.all(np.abs(values - expected) <= bound(fleet, len(members), expected))
    assert weight == expected_weight  # integer example counts are encoded exactly


@pytest.mark.parametrize(("n", "m"), [(3, 3_000), (10, 3_000), (50, 10_000)])
def test_classic_secagg_sum_equals_the_plain_weighted_sum(n: int, m: int) -> None:
    fleet = make_fleet(n, m, neighbours=n - 1)
    assert fleet.params.neighbours == n - 1
    values, weight = run_round(fleet, chunk=1_000)
    check(fleet, values, weight, set(fleet.ids))


def test_secagg_plus_sparse_graph_with_chunks_in_any_order() -> None:
    fleet = make_fleet(50, 10_000, seed=4)  # derived k and t (dropout 5%, failure <= 1e-4)
    assert (fleet.params.neighbours, fleet.params.threshold) == (13, 7)
    assert all(len(peers) == 13 for peers in fleet.server.graph.values()) or not fleet.server.graph
    values, weight = run_round(fleet, chunk=997, shuffle_seed=1)
    assert all(len(peers) == 13 for peers in fleet.server.graph.values())
    check(fleet, values, weight, set(fleet.ids))


def test_whole_upload_api_and_external_accumulator_agree() -> None:
    """mask_update + unmask(summed): for callers that sum the M + W words themselves."""
    fleet = make_fleet(5, 1_500, seed=2)
    server = type(fleet.server)("t", 1, fleet.ids, fleet.params)  # no dimension: no accumulator
    fleet.server = server
    for c in fleet.ids:
        server.add_keys(c, fleet.clients[c].advertise())
    server.close_keys()
    for c in fleet.ids:
        server.add_shares(c, fleet.clients[c].share_keys(server.neighbours_payload(c)))
    server.close_shares()
    total = np.zeros(fleet.dimension + 1, dtype=np.uint32)
    for c in fleet.ids:
        fleet.clients[c].receive_shares(server.shares_payload(c))
        server.check_input(c)
        total += fleet.clients[c].mask_update(fleet.updates[c], fleet.weights[c])
    server.close_inputs(set(fleet.ids))
    reveal(fleet, fleet.ids)
    values, weight = server.unmask(total)
    check(fleet, values, weight, set(fleet.ids))


@pytest.mark.parametrize(
    "options", [{"rounding": "nearest"}, {"bits": 16}, {"clip": 0.25, "max_weight": 7.5}]
)
def test_quantization_options(options: dict[str, object]) -> None:
    fleet = make_fleet(6, 2_000, seed=3, **options)
    values, weight = run_round(fleet)
    expected, expected_weight = plain(fleet, set(fleet.ids))
    assert np.all(np.abs(values - expected) <= bound(fleet, 6, expected))
    assert weight == pytest.approx(expected_weight, abs=6 / fleet.params.weight_scale)


def test_nan_in_an_update_is_refused_before_anything_leaves_the_client() -> None:
    fleet = make_fleet(4, 100)
    run = fleet.clients["c00"] = SecAggClient("t", 1, "c00", fleet.params, block_words=64)
    keys_and_shares(fleet)
    run.receive_shares(fleet.server.shares_payload("c00"))
    run.start_upload(100, 10.0)
    bad = np.zeros(100, np.float32)
    bad[90] = np.nan  # in the second block: the first was already masked when it is found
    out = np.full(100, 7, np.uint32)
    with pytest.raises(ValueError, match="NaN"):
        run.mask_chunk(0, bad, out)
    assert not out.any()  # wiped, masked block included
    run.mask_chunk(0, np.zeros(100, np.float32))  # the words were not consumed: still maskable once


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        SecAggParams.build(2)
    with pytest.raises(ValueError, match="threshold"):
        SecAggParams(10, 4, 5, 1.0, 10.0)
    with pytest.raises(ValueError, match="above k/2"):
        SecAggParams(10, 4, 2, 1.0, 10.0)  # t = k/2: an aggregator lying about dropouts gets both
    with pytest.raises(ValueError, match="bits"):
        SecAggParams(10, 4, 3, 1.0, 10.0, bits=31)
    with pytest.raises(ValueError, match="clip"):
        SecAggParams(10, 4, 3, float("inf"), 10.0)
    p = SecAggParams.build(100)
    assert (p.neighbours, p.threshold) == (15, 8)  # the least k whose failure bound is <= 1e-4
    assert failure_bound(100, 15, 8, 0.05) <= 1e-4 < failure_bound(100, 14, 8, 0.05)
    assert [threshold_for(k) for k in (2, 3, 4, 9, 14)] == [2, 2, 3, 5, 8]  # strictly above k/2
    assert threshold_for(14, colluders=3) == 9  # 2t > k + c
    assert derive_neighbours(8, 0.05, 1e-4) == 7  # nothing sparser reaches it: classic SecAgg
    assert SecAggParams.build(100, dropout=0.2).neighbours > 15  # more dropouts, more neighbours
    assert p.levels * 100 + 100 < 2**32  # n codes of at most L + 1 cannot wrap
    assert (
        SecAggParams.build(5, neighbours=4).fingerprint() != SecAggParams.build(5, neighbours=2).fingerprint()
    )


def test_masking_in_place_over_the_float_buffer() -> None:
    """A client may mask each chunk into the memory of its float32 update (no second copy)."""
    fleet = make_fleet(4, 5_000, seed=9)
    keys_and_shares(fleet)
    for c in fleet.ids:
        client, values = fleet.clients[c], fleet.updates[c].copy()
        client.receive_shares(fleet.server.shares_payload(c))
        client.start_upload(len(values), fleet.weights[c])
        for offset in range(0, len(values), 1_234):
            chunk = values[offset : offset + 1_234]
            fleet.server.add_chunk(c, offset, client.mask_chunk(offset, chunk, chunk.view(np.uint32)))
        fleet.server.add_chunk(c, len(values), client.weight_words())
    fleet.server.close_inputs()
    reveal(fleet, fleet.ids)
    values, weight = fleet.server.unmask()
    check(fleet, values, weight, set(fleet.ids))
