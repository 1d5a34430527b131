"""SecAgg+ over real gRPC: the aggregator's stages, its masked sum, and its refusals on the wire."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from fedfleet.secagg import MASKED_TENSOR, SecAggClient, SecAggParams
from fedfleet.v1 import aggregator_pb2 as pb

from tests.dataplane.harness import Aggregator, chunks_of, running_aggregator

IDS = ["site-a-0", "site-b-0", "site-c-0"]
Stage = pb.SecAggRequest


def exchange(agg: Aggregator, client: str, stage: int, payload: bytes, session: str = "s1") -> pb.SecAggReply:
    return agg.clients.SecAgg(
        pb.SecAggRequest(
            training="tiny", client_id=client, round=1, session=session, stage=stage, payload=payload
        ),
        timeout=60,
    )


def params_from(reply: pb.JoinReply) -> SecAggParams:
    s = reply.config.secure_aggregation
    return SecAggParams(s.participants, s.neighbours, s.threshold, s.clip, s.max_weight)


def keys_and_shares(agg: Aggregator, client: str) -> SecAggClient:
    reply = agg.join(client)
    assert reply.action == pb.JoinReply.ACTION_TRAIN
    attempt = reply.config.secure_aggregation.attempt
    secure = SecAggClient("tiny", 1, client, params_from(reply), attempt=attempt)
    neighbours = exchange(agg, client, Stage.STAGE_ADVERTISE_KEYS, secure.advertise())
    shares = exchange(agg, client, Stage.STAGE_SHARE_KEYS, secure.share_keys(neighbours.payload))
    secure.receive_shares(shares.payload)
    return secure


def endorse_and_reveal(agg: Aggregator, client: str, secure: SecAggClient) -> pb.SecAggReply:
    """The consistency round (every survivor's call returns once all have endorsed), then the reveal."""
    survivors = exchange(agg, client, Stage.STAGE_UNMASK, b"")
    assert survivors.payload and not survivors.done
    endorsed = exchange(agg, client, Stage.STAGE_CONSISTENCY, secure.endorse(survivors.payload))
    return exchange(agg, client, Stage.STAGE_UNMASK, secure.reveal(endorsed.payload))


def test_a_secure_round_over_grpc_releases_only_the_weighted_mean(tmp_path: Path) -> None:
    with running_aggregator(tmp_path, rounds=2, secureAggregation={"clipRange": 1.0}) as agg:
        agg.start_round(1, IDS, min_clients=3)
        with ThreadPoolExecutor(3) as pool:
            secure = dict(zip(IDS, pool.map(lambda c: keys_and_shares(agg, c), IDS), strict=True))
        model = agg.download(IDS[0], 1)
        flat_size = sum(v.size for v in model.values())
        updates = {c: np.full(flat_size, 0.1 * (i + 1), dtype=np.float32) for i, c in enumerate(IDS)}
        examples = {"site-a-0": 10, "site-b-0": 20, "site-c-0": 70}

        plain_attempt = chunks_of({k: np.zeros_like(v) for k, v in model.items()})
        with pytest.raises(grpc.RpcError) as refused:
            agg.upload(IDS[0], 1, plain_attempt)
        assert (
            refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "unknown tensor" in refused.value.details()
        )

        for c in IDS:
            words = secure[c].mask_update(updates[c], float(examples[c]))
            agg.upload(c, 1, chunks_of({MASKED_TENSOR: words}, 1 << 16), examples=examples[c])
        with ThreadPoolExecutor(3) as pool:
            assert all(pool.map(lambda c: endorse_and_reveal(agg, c, secure[c]).done, IDS))
        with pytest.raises(grpc.RpcError) as again:
            exchange(
                agg,
                IDS[0],
                Stage.STAGE_UNMASK,
                b'{"context":"fedfleet/tiny/1","client":"site-a-0","shares":{}}',
            )
        assert again.value.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)

        final = list(agg.control.WatchRound(pb.WatchRequest(round=1)))[-1]
        assert final.phase == pb.ROUND_PHASE_SUCCEEDED, final.reason
        agg.start_round(2, IDS, min_clients=3)
        agg.join(IDS[0], session="s2")
        after = agg.download(IDS[0], 2)
        mean = (10 * 0.1 + 20 * 0.2 + 70 * 0.3) / 100  # the example-weighted mean delta
        for name, value in model.items():
            np.testing.assert_allclose(after[name], value + mean, atol=1e-5)


def test_secure_stage_messages_are_refused_out_of_order_or_from_strangers(tmp_path: Path) -> None:
    with running_aggregator(tmp_path, rounds=2, secureAggregation={"stageTimeoutSeconds": 2}) as agg:
        agg.start_round(1, IDS, min_clients=2)
        reply = agg.join(IDS[0])
        attempt = reply.config.secure_aggregation.attempt
        secure = SecAggClient("tiny", 1, IDS[0], params_from(reply), attempt=attempt)
        advert = secure.advertise()

        def code(client: str, stage: int, payload: bytes, session: str = "s1") -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as err:
                exchange(agg, client, stage, payload, session)
            return err.value.code(), err.value.details()

        assert code("site-z-0", Stage.STAGE_ADVERTISE_KEYS, advert)[0] == grpc.StatusCode.PERMISSION_DENIED
        assert code(IDS[0], Stage.STAGE_SHARE_KEYS, b"{}")[0] == grpc.StatusCode.FAILED_PRECONDITION
        assert code(IDS[0], Stage.STAGE_ADVERTISE_KEYS, b"\x00garbage")[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert code(IDS[0], Stage.STAGE_ADVERTISE_KEYS, advert, session="other")[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        # only one client advertises: at the stage deadline the round cannot be secured and says so
        status, details = code(IDS[0], Stage.STAGE_ADVERTISE_KEYS, advert)
        assert status == grpc.StatusCode.ABORTED and "1 of 3 clients advertised keys" in details


def test_a_client_dropped_during_the_key_exchange_is_not_waited_for(tmp_path: Path) -> None:
    four = [*IDS, "site-d-0"]
    spec = {"secureAggregation": {"stageTimeoutSeconds": 120}, "roundTimeoutSeconds": 600}
    with running_aggregator(tmp_path, rounds=2, **spec) as agg:
        agg.start_round(1, four, min_clients=3, timeout=600)
        with ThreadPoolExecutor(3) as pool:
            pending = [pool.submit(keys_and_shares, agg, c) for c in IDS]
            # site-d-0 never speaks: the controller reports it gone, and the stage closes without it
            agg.control.DropClient(pb.DropRequest(round=1, client_id="site-d-0", reason="pod failed"))
            secure = {c: f.result(timeout=20) for c, f in zip(IDS, pending, strict=True)}
        model = agg.download(IDS[0], 1)
        flat_size = sum(v.size for v in model.values())
        for c in IDS:
            words = secure[c].mask_update(np.full(flat_size, 0.5, dtype=np.float32), 10.0)
            agg.upload(c, 1, chunks_of({MASKED_TENSOR: words}, 1 << 16), examples=10)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda c: endorse_and_reveal(agg, c, secure[c]), IDS))
        final = list(agg.control.WatchRound(pb.WatchRequest(round=1)))[-1]
        assert final.phase == pb.ROUND_PHASE_SUCCEEDED, final.reason
        assert list(final.dropped) == ["site-d-0"] and sorted(final.reported) == IDS
