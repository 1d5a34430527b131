"""Every kind of bad update is refused with its own status, and the running sum stays exact.

Each test opens a round, throws bad uploads at a real aggregator process over loopback gRPC,
then lets the participants upload good updates: the new global model must equal the initial
model plus the example-weighted mean of the good updates alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from fedfleet.v1 import aggregator_pb2 as pb

from tests.dataplane.harness import Aggregator, chunks_of, rechecksum, running_aggregator

PARTICIPANTS = ["site-a-0", "site-b-0"]
PLAIN = {"enabled": False}  # these tests inspect plain updates; SecAgg+ has its own


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Aggregator:
    with running_aggregator(tmp_path_factory.mktemp("agg"), rounds=100, secureAggregation=PLAIN) as agg:
        yield agg


def open_round(agg: Aggregator) -> tuple[int, dict[str, np.ndarray]]:
    number = agg.status().model_version + 1
    agg.start_round(number, PARTICIPANTS, min_clients=2)
    for client in PARTICIPANTS:
        assert agg.join(client).action == pb.JoinReply.ACTION_TRAIN
    return number, agg.download(PARTICIPANTS[0], number)


def good_update(model: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, scale) for k, v in model.items()}


def finish_round_and_check(
    agg: Aggregator,
    number: int,
    model: dict[str, np.ndarray],
    encode: Callable[[dict[str, np.ndarray]], list[pb.TensorChunk]] = chunks_of,
) -> None:
    agg.upload(PARTICIPANTS[0], number, encode(good_update(model, 1.0)), examples=10)
    agg.upload(PARTICIPANTS[1], number, encode(good_update(model, 4.0)), examples=30)
    final = list(agg.control.WatchRound(pb.WatchRequest(round=number)))[-1]
    assert final.phase == pb.ROUND_PHASE_SUCCEEDED, final.reason
    # The next round serves the new global model: initial + (10*1 + 30*4) / 40 = initial + 3.25.
    agg.start_round(number + 1, PARTICIPANTS, min_clients=2)
    agg.join(PARTICIPANTS[0])
    after = agg.download(PARTICIPANTS[0], number + 1)
    for name, value in model.items():
        np.testing.assert_allclose(after[name], value + 3.25, rtol=1e-6, atol=1e-6)
    for client in PARTICIPANTS:  # close round number+1 so the next test can open its own
        agg.control.DropClient(pb.DropRequest(round=number + 1, client_id=client, reason="test over"))
    assert list(agg.control.WatchRound(pb.WatchRequest(round=number + 1)))[-1].phase == pb.ROUND_PHASE_FAILED


def corrupt(kind: str) -> Callable[[list[pb.TensorChunk]], list[pb.TensorChunk]]:
    """Mutations of a valid chunk list: valid chunks first, then the bad one."""

    def apply(chunks: list[pb.TensorChunk]) -> list[pb.TensorChunk]:
        bad = pb.TensorChunk()
        bad.CopyFrom(chunks[-1])
        if kind == "unknown tensor":
            bad.name = "not.a.tensor"
        elif kind == "wrong shape":
            bad.shape[:] = [*bad.shape, 1]
        elif kind == "wrong dtype":
            bad.dtype = "float64"
        elif kind == "checksum":
            bad.crc32 ^= 0xFFFF
        elif kind in ("nan", "inf"):
            values = np.frombuffer(bad.data, dtype=np.float32).copy()
            values[0] = np.nan if kind == "nan" else np.inf
            bad.data = values.tobytes()
            rechecksum(bad)
        elif kind == "repeated chunk":
            bad.CopyFrom(chunks[0])
        elif kind == "out of range":
            bad.data = bad.data + b"\0\0\0\0" * 64
            rechecksum(bad)
        elif kind == "incomplete":
            return chunks[:-1]
        return [*chunks[:-1], bad]

    return apply


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [
        ("unknown tensor", grpc.StatusCode.INVALID_ARGUMENT, "unknown tensor 'not.a.tensor'"),
        ("wrong shape", grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        ("wrong dtype", grpc.StatusCode.INVALID_ARGUMENT, "dtype float64, expected float32"),
        ("checksum", grpc.StatusCode.DATA_LOSS, "checksum mismatch"),
        ("nan", grpc.StatusCode.INVALID_ARGUMENT, "NaN or Inf"),
        ("inf", grpc.StatusCode.INVALID_ARGUMENT, "NaN or Inf"),
        ("repeated chunk", grpc.StatusCode.INVALID_ARGUMENT, "arrive once, in order"),
        ("out of range", grpc.StatusCode.OUT_OF_RANGE, "tensor has"),
        ("incomplete", grpc.StatusCode.INVALID_ARGUMENT, "incomplete update"),
    ],
)
def test_bad_chunks_are_refused_and_leave_the_sum_untouched(
    aggregator: Aggregator, kind: str, code: grpc.StatusCode, words: str
) -> None:
    number, model = open_round(aggregator)
    poisoned = corrupt(kind)(chunks_of(good_update(model, 1000.0)))
    with pytest.raises(grpc.RpcError) as refused:
        aggregator.upload(PARTICIPANTS[0], number, poisoned, examples=10)
    assert refused.value.code() == code
    assert words in refused.value.details()
    finish_round_and_check(aggregator, number, model)


def test_duplicate_late_and_foreign_updates_are_refused(aggregator: Aggregator) -> None:
    number, model = open_round(aggregator)
    update = chunks_of(good_update(model, 1.0))

    def refused(call: Callable[[], object]) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        return caught.value

    err = refused(lambda: aggregator.upload("site-z-0", number, update))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "not a participant" in err.details()
    err = refused(lambda: aggregator.upload(PARTICIPANTS[0], number, update, training="other"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "serves training 'tiny'" in err.details()
    err = refused(lambda: aggregator.upload(PARTICIPANTS[0], number, update, base_version=number + 5))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "model version" in err.details()
    err = refused(lambda: aggregator.upload(PARTICIPANTS[0], number, update, session="another-process"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "another session" in err.details()
    err = refused(lambda: aggregator.upload(PARTICIPANTS[0], number + 1, update))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "not open" in err.details()

    aggregator.upload(PARTICIPANTS[0], number, chunks_of(good_update(model, 1.0)), examples=10)
    err = refused(lambda: aggregator.upload(PARTICIPANTS[0], number, update, examples=10))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "already reported" in err.details()

    aggregator.upload(PARTICIPANTS[1], number, chunks_of(good_update(model, 4.0)), examples=30)
    final = list(aggregator.control.WatchRound(pb.WatchRequest(round=number)))[-1]
    assert final.phase == pb.ROUND_PHASE_SUCCEEDED
    err = refused(lambda: aggregator.upload(PARTICIPANTS[1], number, update, examples=30))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "late: round" in err.details()
    assert final.model_digest == aggregator.status().model_digest

    aggregator.start_round(number + 1, PARTICIPANTS, min_clients=2)
    aggregator.join(PARTICIPANTS[0])
    after = aggregator.download(PARTICIPANTS[0], number + 1)
    for name, value in model.items():
        np.testing.assert_allclose(after[name], value + 3.25, rtol=1e-6, atol=1e-6)
    for client in PARTICIPANTS:
        aggregator.control.DropClient(pb.DropRequest(round=number + 1, client_id=client, reason="test over"))


def test_round_fails_at_deadline_below_min_clients_and_keeps_the_model(tmp_path: Path) -> None:
    with running_aggregator(tmp_path, rounds=5, secureAggregation=PLAIN) as agg:
        before = agg.status().model_digest
        agg.start_round(1, PARTICIPANTS, min_clients=2, timeout=1.5)
        agg.join(PARTICIPANTS[0])
        model = agg.download(PARTICIPANTS[0], 1)
        agg.upload(PARTICIPANTS[0], 1, chunks_of(good_update(model, 1.0)))
        final = list(agg.control.WatchRound(pb.WatchRequest(round=1)))[-1]
        assert final.phase == pb.ROUND_PHASE_FAILED
        assert "deadline passed with 1 of 2 participants reported; minClients is 2" in final.reason
        status = agg.status()
        assert status.model_version == 0 and status.model_digest == before
        # the same round can be tried again, and succeeds at its deadline with enough updates
        agg.start_round(1, PARTICIPANTS, min_clients=1, timeout=1.5)
        agg.join(PARTICIPANTS[0], session="s2")
        agg.upload(PARTICIPANTS[0], 1, chunks_of(good_update(model, 1.0)), session="s2")
        final = list(agg.control.WatchRound(pb.WatchRequest(round=1)))[-1]
        assert final.phase == pb.ROUND_PHASE_SUCCEEDED and list(final.reported) == [PARTICIPANTS[0]]
        assert agg.status().model_version == 1


def test_an_aborted_round_fails_with_its_uploads_discarded_and_runs_again_from_its_start(
    tmp_path: Path,
) -> None:
    """AbortRound (a suspend that does not wait): the round fails even with minClients updates
    in, nothing of them reaches the model, and the same round then runs as if it never had."""
    with running_aggregator(tmp_path, rounds=5, secureAggregation=PLAIN) as agg:
        before = agg.status().model_digest
        agg.start_round(1, PARTICIPANTS, min_clients=1, timeout=60)
        agg.join(PARTICIPANTS[0])
        model = agg.download(PARTICIPANTS[0], 1)
        agg.upload(PARTICIPANTS[0], 1, chunks_of(good_update(model, 5.0)))
        aborted = agg.control.AbortRound(pb.AbortRequest(round=1, reason="training suspended"))
        assert aborted.phase == pb.ROUND_PHASE_FAILED and aborted.reason == "aborted: training suspended"
        assert aborted.aborted  # the controller counts it as no failure
        assert list(agg.control.WatchRound(pb.WatchRequest(round=1)))[-1].phase == pb.ROUND_PHASE_FAILED
        status = agg.status()
        assert status.model_version == 0 and status.model_digest == before
        # aborting again, or a round that is not the current one, changes nothing / is refused
        assert agg.control.AbortRound(pb.AbortRequest(round=1)).reason == "aborted: training suspended"
        with pytest.raises(grpc.RpcError) as refused:
            agg.control.AbortRound(pb.AbortRequest(round=2))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        agg.start_round(1, PARTICIPANTS, min_clients=1, timeout=1.5)
        for client in PARTICIPANTS:
            agg.join(client, session="s2")
            agg.upload(client, 1, chunks_of(good_update(model, 1.0)), session="s2")
        final = list(agg.control.WatchRound(pb.WatchRequest(round=1)))[-1]
        assert final.phase == pb.ROUND_PHASE_SUCCEEDED and sorted(final.reported) == PARTICIPANTS
        agg.start_round(2, PARTICIPANTS, min_clients=1, timeout=1.5)
        agg.join(PARTICIPANTS[0], session="s2")
        after = agg.download(PARTICIPANTS[0], 2)
        for name, value in model.items():  # the mean of the second try's updates alone
            np.testing.assert_allclose(after[name], value + 1.0, rtol=1e-6, atol=1e-6)
