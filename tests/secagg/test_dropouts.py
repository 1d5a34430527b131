"""Dropouts after key sharing and after masked upload: recovered while the threshold holds;
below it, a clear abort and nothing released."""

from __future__ import annotations

import numpy as np
import pytest
from fedfleet.secagg import OutOfOrder, SecAggAbort, SecAggServer

from tests.secagg.protocol import (
    Fleet,
    bound,
    keys_and_shares,
    make_fleet,
    plain,
    reveal,
    run_round,
    upload,
)


def check_success(
    fleet: Fleet, after_shares: frozenset[str], after_upload: frozenset[str] = frozenset()
) -> None:
    values, weight = run_round(fleet, drop_after_shares=after_shares, drop_after_upload=after_upload)
    survivors = set(fleet.server.u3)
    expected, expected_weight = plain(fleet, survivors)
    assert np.all(np.abs(values - expected) <= bound(fleet, len(survivors), expected))
    assert weight == expected_weight


def assert_nothing_released(server: SecAggServer) -> None:
    assert server.stage == "aborted" and server.abort_reason
    assert server.accumulator is not None and not server.accumulator.any()  # wiped
    with pytest.raises(OutOfOrder):
        server.unmask()


@pytest.mark.parametrize(
    ("after_keys", "after_upload"), [(1, 0), (0, 1), (2, 1), (3, 0), (0, 3), (2, 2), (4, 0)]
)
def test_classic_dropouts_at_several_rates(after_keys: int, after_upload: int) -> None:
    """n = 10, k = 9, t = 5: every secret is held by all 9 others."""
    fleet = make_fleet(10, 1_500, seed=after_keys * 10 + after_upload, neighbours=9)
    ids = fleet.ids
    gone = frozenset(ids[:after_keys])  # shared keys, never uploaded
    silent = frozenset(ids[after_keys : after_keys + after_upload])  # uploaded, never revealed
    values, weight = run_round(fleet, drop_after_shares=gone, drop_after_upload=silent)
    assert fleet.server.u3 == set(ids) - gone
    expected, expected_weight = plain(fleet, set(ids) - gone)
    assert np.all(np.abs(values - expected) <= bound(fleet, 10 - after_keys, expected))
    assert weight == expected_weight


def test_dropped_before_sharing_and_pruned_clients_are_left_out() -> None:
    fleet = make_fleet(12, 1_000, seed=5, neighbours=11)
    ids = fleet.ids
    values, weight = run_round(fleet, drop_after_keys={ids[0], ids[1]}, drop_after_shares={ids[2]})
    assert fleet.server.u2 == set(ids[2:]) and fleet.server.u3 == set(ids[3:])
    expected, expected_weight = plain(fleet, set(ids[3:]))
    assert np.all(np.abs(values - expected) <= bound(fleet, 9, expected))
    assert weight == expected_weight


def test_at_threshold_succeeds_and_just_below_aborts() -> None:
    """n = 10, k = 9, t = 5. Eight uploads; a revealer's self-mask seed is held by the other
    revealers: six revealers leave each exactly t = 5 shares, five leave 4 (the silent
    uploaders' seeds still have 5), which the consistency round sees: nobody reveals."""
    ids = make_fleet(10, 500).ids
    check_success(make_fleet(10, 500, neighbours=9), frozenset(ids[:2]), frozenset(ids[2:4]))
    fleet = make_fleet(10, 500, neighbours=9)
    with pytest.raises(
        SecAggAbort, match=r"fewer than 5 neighbours endorsed the survivor set for c05 \(self"
    ):
        run_round(fleet, drop_after_shares=frozenset(ids[:2]), drop_after_upload=frozenset(ids[2:5]))
    assert_nothing_released(fleet.server)


def test_too_few_uploads_abort_when_inputs_close() -> None:
    """Six uploads leave each survivor 5 holders (at threshold); five leave 4: abort at once,
    before any share is requested."""
    ids = make_fleet(10, 500).ids
    check_success(make_fleet(10, 500, neighbours=9), frozenset(ids[:4]))
    fleet = make_fleet(10, 500, neighbours=9)
    with pytest.raises(
        SecAggAbort, match="fewer than 5 surviving neighbours hold shares of c05 \\(self mask\\)"
    ):
        run_round(fleet, drop_after_shares=frozenset(ids[:5]))
    assert_nothing_released(fleet.server)
    assert fleet.server.reveals == set()


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.3, 0.45])
def test_secagg_plus_dropouts_follow_the_graph(rate: float) -> None:
    """n = 40, k = 12 (sparse), t = 6: drop a fraction after sharing and as much after upload;
    the round succeeds exactly when every needed secret keeps t holders among the revealers."""
    fleet = make_fleet(40, 800, seed=int(rate * 100))
    rng = np.random.default_rng(int(rate * 1000))
    ids = list(rng.permutation(fleet.ids))
    cut = int(rate * 40)
    gone, silent = frozenset(ids[:cut]), frozenset(ids[cut : cut + cut // 2])
    keys_and_shares(fleet)
    server = fleet.server
    uploaders = sorted(set(fleet.ids) - gone)
    for c in uploaders:
        upload(fleet, c)
    revealers = set(uploaders) - silent
    t = fleet.params.threshold
    needed = [c for c in fleet.ids if c in uploaders or set(server.graph[c]) & set(uploaders)]
    feasible_at_close = all(len(set(server.graph[c]) & set(uploaders)) >= t for c in needed)
    feasible = all(len(set(server.graph[c]) & revealers) >= t for c in needed)
    try:
        server.close_inputs()
        reveal(fleet, revealers)
        values, weight = server.unmask()
    except SecAggAbort as err:
        assert not feasible, err
        assert ("surviving neighbours" in str(err)) == (not feasible_at_close)
        assert_nothing_released(server)
        return
    assert feasible
    expected, expected_weight = plain(fleet, set(uploaders))
    assert np.all(np.abs(values - expected) <= bound(fleet, len(uploaders), expected))
    assert weight == expected_weight


def test_an_upload_that_stops_part_way_aborts_the_round() -> None:
    fleet = make_fleet(5, 1_000)
    keys_and_shares(fleet)
    for c in fleet.ids[1:]:
        upload(fleet, c)
    half = fleet.clients[fleet.ids[0]]
    half.receive_shares(fleet.server.shares_payload(fleet.ids[0]))
    half.start_upload(1_000, 5.0)
    fleet.server.add_chunk(fleet.ids[0], 0, half.mask_chunk(0, fleet.updates[fleet.ids[0]][:400]))
    with pytest.raises(SecAggAbort, match="stopped part-way"):
        fleet.server.close_inputs()
    assert_nothing_released(fleet.server)


def test_too_few_advertise_or_share() -> None:
    fleet = make_fleet(6, 100, threshold_ratio=0.6, neighbours=5)  # t = 3
    server = fleet.server
    for c in fleet.ids[:3]:
        server.add_keys(c, fleet.clients[c].advertise())
    with pytest.raises(SecAggAbort, match="3 of 6 clients advertised keys"):
        server.close_keys()  # 3 clients: k = 2 < t
    fleet = make_fleet(6, 100, threshold_ratio=0.6, neighbours=5)
    with pytest.raises(SecAggAbort, match="too few for threshold 3"):
        keys_and_shares(fleet, skip_shares=fleet.ids[:3])
    assert fleet.server.stage == "aborted"
