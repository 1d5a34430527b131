"""Wire messages (fedfleet.v1) <-> the controller's domain types, in one place.

The round's phase and kind are translated here and nowhere else: an unset phase reads as
Pending, an unset kind as train.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.controller import core
from fedfleet.privacy.release import RoundPrivacy
from fedfleet.rounds.ports import AggregatorView, ClientState, RoundSnapshot
from fedfleet.v1 import aggregator_pb2 as pb

RECENT_ROUNDS = 2  # completed rounds in the driver's view: a round's evaluation arrives one round late

_PHASES: dict[int, vocab.RoundPhase] = {
    pb.ROUND_PHASE_PENDING: "Pending",
    pb.ROUND_PHASE_TRAINING: "Training",
    pb.ROUND_PHASE_AGGREGATING: "Aggregating",
    pb.ROUND_PHASE_SUCCEEDED: "Succeeded",
    pb.ROUND_PHASE_FAILED: "Failed",
}
_KINDS: dict[int, vocab.RoundKind] = {pb.ROUND_KIND_TRAIN: "train", pb.ROUND_KIND_EVALUATE: "evaluate"}
_KIND_TO_PB: dict[str, int] = {kind: value for value, kind in _KINDS.items()}


def round_phase(value: int) -> vocab.RoundPhase:
    return _PHASES.get(int(value), "Pending")


def round_kind(value: int) -> vocab.RoundKind:
    return _KINDS.get(int(value), "train")


def kind_to_pb(kind: str) -> int:
    return _KIND_TO_PB.get(kind, int(pb.ROUND_KIND_TRAIN))


def round_view(state: pb.RoundState) -> core.RoundView:
    return core.RoundView(state.round, round_kind(state.kind), round_phase(state.phase), state.reason)


def round_snapshot(state: pb.RoundState) -> RoundSnapshot:
    return RoundSnapshot(
        number=state.round,
        kind=round_kind(state.kind),
        phase=round_phase(state.phase),
        reason=state.reason,
        participants=tuple(state.participants),
        reported=tuple(state.reported),
        dropped=tuple(state.dropped),
        clients=tuple(ClientState(c.client_id, c.state, c.reason) for c in state.clients),
        metrics=dict(state.metrics),
        model_digest=state.model_digest,
        model_version=state.model_version,
        min_clients=state.min_clients,
        started_unix=state.started_unix,
        finished_unix=state.finished_unix,
        deadline_unix=state.deadline_unix,
        bytes_received=int(state.bytes_received),
        privacy=round_privacy(state),
    )


def aggregator_view(status: pb.AggregatorStatus) -> AggregatorView:
    """The driver's bounded view of `GetStatus`."""
    history = sorted(status.history, key=lambda s: int(s.round))
    return AggregatorView(
        model_version=status.model_version,
        model_digest=status.model_digest,
        ready_clients=tuple(status.ready_clients),
        current=round_snapshot(status.current) if status.HasField("current") else None,
        recent=tuple(round_snapshot(s) for s in history[-RECENT_ROUNDS:]),
        released=tuple((int(s.round), p) for s in history if (p := round_privacy(s)) is not None),
        finished=status.finished,
        lineage_head=status.lineage_head,
        lineage_public_key=status.lineage_public_key,
        lineage_key_fingerprint=status.lineage_key_fingerprint,
    )


def start_round_request(action: core.StartRound) -> pb.StartRoundRequest:
    return pb.StartRoundRequest(
        round=action.number,
        kind=kind_to_pb(action.kind),  # type: ignore[arg-type]
        participants=list(action.participants),
        timeout_seconds=action.timeout_seconds,
        min_clients=action.min_clients,
    )


def round_privacy(state: pb.RoundState) -> RoundPrivacy | None:
    """The DP record of a released round (RoundState.privacy), None when privacy was off."""
    if not state.HasField("privacy"):
        return None
    p = state.privacy
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


def released_privacy(history: Iterable[pb.RoundState]) -> tuple[RoundPrivacy, ...]:
    """The DP records of the completed training rounds, in round order: what has been charged."""
    records = (round_privacy(s) for s in sorted(history, key=lambda s: int(s.round)))
    return tuple(r for r in records if r is not None)


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
