"""SecAgg+ in one process: exact sums, dropout recovery, threshold aborts, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from fedfleet.secagg import ProtocolError, SecAggAbort, SecAggClient, SecAggParams, SecAggServer
from fedfleet.secagg.masks import MaskExpander
from fedfleet.secagg.quantize import scale_for
from scipy import stats

from tests.secagg.protocol import plain, run_round

M = 2_000


def fleet(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    rng = np.random.default_rng(seed)
    updates = {f"c{i:02d}": rng.uniform(-1, 1, M).astype(np.float32) for i in range(n)}
    return updates, {c: float(rng.integers(1, 1000)) for c in updates}


def bound(params: SecAggParams, summands: int) -> float:
    """Stochastic rounding moves each encoded value by less than one step; float32 adds a little."""
    return summands / scale_for(params.clip, params.participants) + 1e-5


@pytest.mark.parametrize(("n", "classic"), [(3, True), (10, True), (50, True), (50, False)])
def test_unmasked_sum_equals_the_plain_weighted_sum(n: int, classic: bool) -> None:
    updates, weights = fleet(n)
    params = SecAggParams.build(n, neighbours=n - 1 if classic else 0, clip=1.0, max_weight=1000)
    values, weight, _ = run_round(updates, weights, params)
    expected, expected_weight = plain(updates, weights, params, set(updates))
    assert np.abs(values - expected).max() <= bound(params, n)
    assert weight == pytest.approx(expected_weight, abs=n * 1e-6)


@pytest.mark.parametrize(("after_keys", "after_upload"), [(1, 0), (0, 1), (2, 2), (3, 0), (0, 3)])
def test_dropouts_are_recovered_while_the_threshold_holds(after_keys: int, after_upload: int) -> None:
    updates, weights = fleet(10, seed=after_keys * 10 + after_upload)
    params = SecAggParams.build(10, neighbours=9, clip=1.0, max_weight=1000)  # t = 5
    ids = sorted(updates)
    gone = frozenset(ids[:after_keys])
    silent = frozenset(ids[after_keys : after_keys + after_upload])  # uploaded, then vanished
    values, weight, server = run_round(updates, weights, params, gone, silent)
    expected, expected_weight = plain(updates, weights, params, set(ids) - gone)
    assert server.u3 == set(ids) - gone
    assert np.abs(values - expected).max() <= bound(params, len(server.u3))
    assert weight == pytest.approx(expected_weight, abs=1e-5)


def test_at_threshold_succeeds_and_just_below_aborts_releasing_nothing() -> None:
    """Clients hold shares of their neighbours' secrets, not their own: with classic SecAgg each
    needed secret has exactly t shares when t + 1 clients survive."""
    updates, weights = fleet(6, seed=3)
    params = SecAggParams.build(6, neighbours=5, threshold_ratio=0.6, clip=1.0, max_weight=1000)
    ids = sorted(updates)
    assert params.threshold == 3
    at = frozenset(ids[:2])  # four survive: every self-mask seed has exactly 3 shares
    values, _, _ = run_round(updates, weights, params, drop_after_keys=at)
    expected, _ = plain(updates, weights, params, set(ids) - at)
    assert np.abs(values - expected).max() <= bound(params, 4)
    with pytest.raises(SecAggAbort, match=r"fewer than 3 shares for c03 \(self mask\), c04"):
        run_round(updates, weights, params, drop_after_keys=frozenset(ids[:3]))
    with pytest.raises(SecAggAbort, match="below threshold 3"):
        run_round(updates, weights, params, drop_after_keys=frozenset(ids[:4]))
    # enough uploads, but survivors vanish before revealing: aborted at unmasking, nothing released
    with pytest.raises(SecAggAbort, match="fewer than 3 shares"):
        run_round(
            updates,
            weights,
            params,
            drop_after_keys=frozenset(ids[:1]),
            drop_after_upload=frozenset(ids[1:3]),
        )


def test_a_masked_upload_alone_looks_uniform_and_hides_the_update() -> None:
    params = SecAggParams.build(5, neighbours=4, clip=1.0, max_weight=1000)
    ids = [f"c{i}" for i in range(5)]
    server = SecAggServer("t", 1, ids, params)
    clients = {c: SecAggClient("t", 1, c, params) for c in ids}
    for c in ids:
        server.add_keys(c, clients[c].advertise())
    server.close_keys()
    for c in ids:
        server.add_shares(c, clients[c].share_keys(server.neighbours_payload(c)))
    server.close_shares()
    clients["c0"].receive_shares(server.shares_payload("c0"))
    update = np.full(50_000, 0.25, dtype=np.float32)  # maximally structured
    masked = clients["c0"].mask_update(update, 500.0)
    counts = np.bincount(masked.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    quantized = np.floor((0.25 * 0.5 + 1.0) * scale_for(1.0, 5))
    assert np.mean(masked[:-1] == quantized) < 1e-3


def test_masks_are_seekable_so_chunks_mask_independently() -> None:
    expander, seed = MaskExpander(), bytes(range(32))
    whole = expander.words(seed, 0, 10_007)
    for offset, size in [(0, 3), (1, 4), (5, 1000), (4093, 5914)]:
        np.testing.assert_array_equal(expander.words(seed, offset, size), whole[offset : offset + size])


class Stage:
    """A round advanced to a chosen stage, for refusal tests."""

    def __init__(self, n: int = 4) -> None:
        self.params = SecAggParams.build(n, neighbours=n - 1, clip=1.0, max_weight=10)
        self.ids = [f"c{i}" for i in range(n)]
        self.server = SecAggServer("t", 7, self.ids, self.params)
        self.clients = {c: SecAggClient("t", 7, c, self.params) for c in self.ids}
        self.adverts = {c: self.clients[c].advertise() for c in self.ids}

    def keys(self) -> None:
        for c in self.ids:
            self.server.add_keys(c, self.adverts[c])
        self.server.close_keys()

    def shares(self) -> dict[str, bytes]:
        sent = {c: self.clients[c].share_keys(self.server.neighbours_payload(c)) for c in self.ids}
        for c in self.ids:
            self.server.add_shares(c, sent[c])
        self.server.close_shares()
        return sent


def refused(code: str, call: object, *args: object) -> str:
    with pytest.raises(ProtocolError) as err:
        call(*args)  # type: ignore[operator]
    assert err.value.code == code, err.value
    return str(err.value)


def test_replayed_duplicated_and_out_of_order_messages_are_refused() -> None:
    s = Stage()
    s.server.add_keys("c0", s.adverts["c0"])
    assert "already advertised" in refused("ALREADY_EXISTS", s.server.add_keys, "c0", s.adverts["c0"])
    assert "not open" in refused("FAILED_PRECONDITION", s.server.add_shares, "c1", b"{}")
    assert "not a participant" in refused("PERMISSION_DENIED", s.server.add_keys, "intruder", s.adverts["c1"])
    assert "sent by" in refused("PERMISSION_DENIED", s.server.add_keys, "c1", s.adverts["c2"])
    for c in s.ids[1:]:
        s.server.add_keys(c, s.adverts[c])
    s.server.close_keys()
    assert "not open" in refused("FAILED_PRECONDITION", s.server.add_keys, "c1", s.adverts["c1"])
    sent = {c: s.clients[c].share_keys(s.server.neighbours_payload(c)) for c in s.ids}
    s.server.add_shares("c0", sent["c0"])
    assert "already sent" in refused("ALREADY_EXISTS", s.server.add_shares, "c0", sent["c0"])


def test_malformed_oversized_and_misbound_messages_are_refused() -> None:
    s = Stage()
    assert "not a SecAgg message" in refused("INVALID_ARGUMENT", s.server.add_keys, "c0", b"\xff{not json")
    assert "needs fields" in refused("INVALID_ARGUMENT", s.server.add_keys, "c0", b'{"context": "x"}')
    assert "exceeds" in refused("RESOURCE_EXHAUSTED", s.server.add_keys, "c0", b" " * (5 * 1024 * 1024))
    other_round = SecAggClient("t", 8, "c0", s.params).advertise()
    assert "not this round" in refused("FAILED_PRECONDITION", s.server.add_keys, "c0", other_round)
    short_key = s.adverts["c0"].replace(b'"cPk":"', b'"cPk":"AAAA', 1)
    assert "32 bytes" in refused("INVALID_ARGUMENT", s.server.add_keys, "c0", short_key)
    s.keys()
    sent = s.clients["c0"].share_keys(s.server.neighbours_payload("c0"))
    partial = sent.replace(b'"c1":', b'"zz":', 1)
    assert "exactly the client's neighbours" in refused(
        "INVALID_ARGUMENT", s.server.add_shares, "c0", partial
    )


def test_a_tampered_share_fails_authentication() -> None:
    s = Stage()
    s.keys()
    s.shares()
    inbox = s.server.shares_payload("c1")
    tampered = inbox.replace(b'"c0":"', b'"c0":"A', 1)  # shifts the base64 ciphertext
    with pytest.raises(ProtocolError):
        s.clients["c1"].receive_shares(tampered)


def test_a_client_never_reveals_both_secrets_of_one_neighbour() -> None:
    s = Stage()
    s.keys()
    s.shares()
    client = s.clients["c0"]
    client.receive_shares(s.server.shares_payload("c0"))
    client.mask_update(np.zeros(10, np.float32), 1.0)
    context = '"context":"fedfleet/t/7"'
    both = f'{{{context},"survivors":["c1"],"dropped":["c1"]}}'.encode()
    assert "both secrets" in refused("PERMISSION_DENIED", client.reveal, both)
    client.reveal(f'{{{context},"survivors":["c1"],"dropped":[]}}'.encode())
    later = f'{{{context},"survivors":[],"dropped":["c1"]}}'.encode()
    assert "other secret" in refused("PERMISSION_DENIED", client.reveal, later)


def test_the_server_only_accepts_the_share_kind_it_may_have() -> None:
    s = Stage()
    s.keys()
    s.shares()
    for c in s.ids:
        s.clients[c].receive_shares(s.server.shares_payload(c))
        s.clients[c].mask_update(np.zeros(10, np.float32), 1.0)
    s.server.close_inputs(set(s.ids[:3]))  # c3 dropped after sharing
    honest = s.clients["c0"].reveal(s.server.request_for("c0"))
    greedy = honest.replace(b'"kind":"sk"', b'"kind":"b"')  # asks to learn c3's self mask instead
    assert "may be revealed" in refused("INVALID_ARGUMENT", s.server.add_reveal, "c0", greedy)
    s.server.add_reveal("c0", honest)
    assert "no masked upload" in refused("FAILED_PRECONDITION", s.server.request_for, "c3")
