"""Status values written to CRs: Kubernetes-style conditions and round status from the aggregator
(the shapes are the typed models of `fedfleet.api.status`)."""

from __future__ import annotations

import datetime
import math
from typing import Literal

from fedfleet.api.status import Condition, RoundClient, RoundPrivacyStatus, RoundStatus
from fedfleet.rounds.ports import RoundSnapshot


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition], type_: str, status: bool, reason: str, message: str, generation: int
) -> list[Condition]:
    """Upsert by type; lastTransitionTime changes only when the status flips."""
    value: Literal["True", "False"] = "True" if status else "False"
    previous = next((c for c in conditions if c.type == type_), None)
    kept = previous.last_transition_time if previous is not None and previous.status == value else None
    out = [c for c in conditions if c.type != type_]
    out.append(
        Condition(
            type=type_,
            status=value,
            reason=reason,
            message=message,
            last_transition_time=kept or now_rfc3339(),
            observed_generation=generation,
        )
    )
    return sorted(out, key=lambda c: c.type)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def round_status(state: RoundSnapshot, retries: int, epsilon: float | None = None) -> RoundStatus:
    """FederatedRound status from the aggregator's round; `epsilon`: the training's epsilon
    once this round is released."""
    privacy = state.privacy
    finished = bool(state.finished_unix)
    return RoundStatus(
        phase=state.phase,
        expected=len(state.participants),
        reported=len(state.reported),
        reported_clients=list(state.reported),
        dropped_clients=list(state.dropped),
        dropped=len(state.dropped),
        retries=retries,
        clients={c.client_id: RoundClient(state=c.state, reason=c.reason) for c in state.clients},
        reason=state.reason,
        metrics=dict(state.metrics),
        aggregate_digest=state.model_digest,
        bytes_received=int(state.bytes_received),
        start_time=rfc3339(state.started_unix),
        privacy=None if privacy is None else RoundPrivacyStatus.model_validate(privacy.to_record()),
        # noiseMultiplier 0 gives an infinite epsilon: not JSON, left out
        epsilon=epsilon if epsilon is not None and math.isfinite(epsilon) else None,
        completion_time=rfc3339(state.finished_unix) if finished else None,
        duration=duration(state.finished_unix - state.started_unix) if finished else None,
    )
