"""A client's per-round settings arrive typed and are checked before it acts on them: an
aggregator that sends SecAgg+ parameters that cannot be safe, or a nonsense proximal term, gets
a refusal naming the field instead of a client that trains with them."""

from __future__ import annotations

import pytest
from fedfleet.convert import round_config_from_pb, round_config_to_pb
from fedfleet.round_config import InvalidRoundConfig, RoundConfig, SecAggSettings
from fedfleet.secagg import ProtocolError, SecAggParams
from fedfleet.strategies import StrategyTerms
from fedfleet.v1 import aggregator_pb2 as pb


def masked() -> RoundConfig:
    params = SecAggParams.build(10, clip=4.0, max_weight=1000.0)
    return RoundConfig(7, StrategyTerms(proximal_mu=0.01), SecAggSettings.of(params, attempt=123))


def test_a_round_config_survives_the_wire_typed() -> None:
    config = masked()
    assert (
        round_config_from_pb(pb.RoundConfig.FromString(round_config_to_pb(config).SerializeToString()))
        == config
    )
    plain = RoundConfig(3)
    assert round_config_from_pb(round_config_to_pb(plain)) == plain
    assert round_config_from_pb(pb.RoundConfig()).secure_aggregation is None  # an unset message: plain


def test_unsafe_secagg_parameters_are_refused_with_the_field_named() -> None:
    message = round_config_to_pb(masked())
    message.secure_aggregation.threshold = 1  # one share would recover a secret
    with pytest.raises(InvalidRoundConfig, match=r"secure_aggregation: threshold t=1 must be within 2\.\.k"):
        round_config_from_pb(message)
    message = round_config_to_pb(masked())
    message.secure_aggregation.lane_bits = 12
    with pytest.raises(InvalidRoundConfig, match="secure_aggregation: lane=12 must be 8, 16 or 32"):
        round_config_from_pb(message)
    message = round_config_to_pb(masked())
    message.secure_aggregation.attempt = 0
    with pytest.raises(InvalidRoundConfig, match=r"secure_aggregation\.attempt must be positive"):
        round_config_from_pb(message)


def test_a_negative_or_infinite_proximal_term_is_refused() -> None:
    for mu in (-0.1, float("inf"), float("nan")):
        message = round_config_to_pb(RoundConfig(0))
        message.strategy.proximal_mu = mu
        with pytest.raises(InvalidRoundConfig, match=r"strategy\.proximal_mu must be finite and >= 0"):
            round_config_from_pb(message)


def test_the_client_treats_a_bad_config_as_a_protocol_refusal() -> None:
    assert issubclass(InvalidRoundConfig, ProtocolError)  # client/app.py abandons the round, logs why
