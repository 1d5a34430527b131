"""Wire messages (fedfleet.v1) <-> the controller's domain types, in one place.

The round's phase and kind are translated here and nowhere else: an unset phase reads as
Pending, an unset kind as train.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.api.status import SiteTrainingAccount
from fedfleet.controller import core
from fedfleet.privacy.release import ReleasedRounds, RoundPrivacy
from fedfleet.round_config import RoundConfig, SecAggSettings
from fedfleet.rounds.ports import AggregatorView, ClientState, RoundSnapshot, SiteAccount
from fedfleet.strategies import StrategyTerms
from fedfleet.v1 import aggregator_pb2 as pb

AnyRound = pb.RoundState | pb.RoundSummary  # GetStatus summarises; StartRound, WatchRound, GetRound are full

_PHASES: dict[int, vocab.RoundPhase] = {
    pb.ROUND_PHASE_PENDING: "Pending",
    pb.ROUND_PHASE_TRAINING: "Training",
    pb.ROUND_PHASE_AGGREGATING: "Aggregating",
    pb.ROUND_PHASE_SUCCEEDED: "Succeeded",
    pb.ROUND_PHASE_FAILED: "Failed",
}
_KINDS: dict[int, vocab.RoundKind] = {pb.ROUND_KIND_TRAIN: "train", pb.ROUND_KIND_EVALUATE: "evaluate"}
_KIND_TO_PB: dict[str, int] = {kind: value for value, kind in _KINDS.items()}
# AggregatorStatus.sites: the most an aggregator counts and shows, and the most read from one
# (a lying one's further entries are not read, so what the operator logs of them stays bounded)
MAX_STATUS_SITES = 1000


def round_phase(value: int) -> vocab.RoundPhase:
    return _PHASES.get(int(value), "Pending")


def round_kind(value: int) -> vocab.RoundKind:
    return _KINDS.get(int(value), "train")


def kind_to_pb(kind: str) -> int:
    return _KIND_TO_PB.get(kind, int(pb.ROUND_KIND_TRAIN))


def round_view(state: AnyRound) -> core.RoundView:
    return core.RoundView(state.round, round_kind(state.kind), round_phase(state.phase), state.reason)


def is_final(state: AnyRound) -> bool:
    return round_phase(state.phase) in vocab.FINAL_PHASES


def round_snapshot(state: pb.RoundState) -> RoundSnapshot:
    """A round in full: its summary's fields and the client lists."""
    return dataclasses.replace(
        summary_snapshot(state),
        participants=tuple(state.participants),
        reported=tuple(state.reported),
        dropped=tuple(state.dropped),
        clients=tuple(ClientState(c.client_id, c.state, c.reason) for c in state.clients),
        aborted=state.aborted,
    )


def summary_snapshot(summary: AnyRound) -> RoundSnapshot:
    """A round from its summary (or the fields a full round shares with it): no client lists."""
    return RoundSnapshot(
        number=summary.round,
        kind=round_kind(summary.kind),
        phase=round_phase(summary.phase),
        reason=summary.reason,
        metrics=dict(summary.metrics),
        model_digest=summary.model_digest,
        model_version=summary.model_version,
        min_clients=summary.min_clients,
        started_unix=summary.started_unix,
        finished_unix=summary.finished_unix,
        deadline_unix=summary.deadline_unix,
        bytes_received=int(summary.bytes_received),
        privacy=round_privacy(summary),
    )


def aggregator_view(status: pb.AggregatorStatus, current: pb.RoundState | None = None) -> AggregatorView:
    """The driver's bounded view of `GetStatus`; `current`: its current round in full (GetRound),
    else the summary stands in for it. `ready_clients` is taken as complete (paged by the port)."""
    recent = sorted(status.recent, key=lambda s: int(s.round))
    if current is not None:
        now: RoundSnapshot | None = round_snapshot(current)
    else:
        now = summary_snapshot(status.current) if status.HasField("current") else None
    return AggregatorView(
        model_version=status.model_version,
        model_digest=status.model_digest,
        ready_clients=tuple(status.ready_clients),
        current=now,
        recent=tuple(summary_snapshot(s) for s in recent),
        released=released_groups(status),
        finished=status.finished,
        lineage_head=status.lineage_head,
        lineage_public_key=status.lineage_public_key,
        lineage_key_fingerprint=status.lineage_key_fingerprint,
        sites=tuple(
            SiteAccount(
                s.site,
                s.updates_accepted,
                s.updates_refused,
                s.bytes_received,
                s.bytes_sent,
                s.client_seconds,
            )
            for s in status.sites[:MAX_STATUS_SITES]
        ),
    )


def site_training_account(account: SiteAccount, updated: str | None = None) -> SiteTrainingAccount:
    """A site's figures in the shape FederationSite status and a local run's report show them."""
    return SiteTrainingAccount(
        updates_accepted=account.updates_accepted,
        updates_refused=account.updates_refused,
        bytes_received=account.bytes_received,
        bytes_sent=account.bytes_sent,
        client_seconds=round(account.client_seconds, 1),
        updated=updated,
    )


def start_round_request(action: core.StartRound, population: int = 0) -> pb.StartRoundRequest:
    """`population`: the clients cohorts are drawn from (the accountant's denominator): with it
    the aggregator writes the training's epsilon into each DP round's lineage record."""
    return pb.StartRoundRequest(
        round=action.number,
        kind=kind_to_pb(action.kind),  # type: ignore[arg-type]
        participants=list(action.participants),
        timeout_seconds=action.timeout_seconds,
        min_clients=action.min_clients,
        accounting=pb.PrivacyAccounting(population=max(0, population)),
    )


def round_privacy(state: AnyRound) -> RoundPrivacy | None:
    """The DP record of a released round (its `privacy`), None when privacy was off."""
    if not state.HasField("privacy"):
        return None
    return privacy_from_pb(state.privacy)


def privacy_from_pb(p: pb.RoundPrivacy) -> RoundPrivacy:
    return RoundPrivacy.from_record(
        {
            "mode": p.mode,
            "clipNorm": p.clip_norm,
            "noiseMultiplier": p.noise_multiplier,
            "expectedClients": p.expected_clients,
            "survivors": p.survivors,
            "maxUpdateNorm": p.max_update_norm,
        }
    )


def released_groups(status: pb.AggregatorStatus) -> tuple[ReleasedRounds, ...]:
    """What has been charged: the completed rounds' DP records, grouped with their counts
    (AggregatorStatus.released). ValueError for a record the accountant cannot take."""
    return tuple(ReleasedRounds(privacy_from_pb(g.privacy), int(g.rounds)) for g in status.released)


def round_config_to_pb(config: RoundConfig) -> pb.RoundConfig:
    terms = pb.StrategyTerms(proximal_mu=config.strategy.proximal_mu)
    message = pb.RoundConfig(seed=config.seed, strategy=terms)
    if (s := config.secure_aggregation) is not None:
        message.secure_aggregation.CopyFrom(
            pb.SecAggParameters(
                participants=s.participants,
                neighbours=s.neighbours,
                threshold=s.threshold,
                clip=s.clip,
                max_weight=s.max_weight,
                lane_bits=s.lane_bits,
                attempt=s.attempt,
            )
        )
    return message


def round_config_from_pb(message: pb.RoundConfig) -> RoundConfig:
    """The round's settings a client acts on; InvalidRoundConfig names what is wrong."""
    secure = None
    if message.HasField("secure_aggregation"):
        s = message.secure_aggregation
        secure = SecAggSettings(
            s.participants, s.neighbours, s.threshold, s.clip, s.max_weight, s.lane_bits, s.attempt
        )
    return RoundConfig(message.seed, StrategyTerms(message.strategy.proximal_mu), secure)


def round_record(state: RoundSnapshot) -> dict[str, Any]:
    """A round as `fedfleet local run` reports it (metrics.json)."""
    return {
        "round": state.number,
        "kind": state.kind,
        "phase": state.phase,
        "participants": list(state.participants),
        "reported": list(state.reported),
        "dropped": list(state.dropped),
        "metrics": dict(state.metrics),
        "model_digest": state.model_digest,
        "bytes": state.bytes_received,  # update payload accepted in this round (compressed)
        "seconds": max(0.0, state.finished_unix - state.started_unix),
        "reason": state.reason,
    }
