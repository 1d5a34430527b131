"""Status shapes written to CRs: Kubernetes-style conditions and round status from the aggregator."""

from __future__ import annotations

import datetime
import math
from typing import Any

from fedfleet.rounds.ports import RoundSnapshot

Object = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Object], type_: str, status: bool, reason: str, message: str, generation: int
) -> list[Object]:
    """Upsert by type; lastTransitionTime changes only when the status flips."""
    value = "True" if status else "False"
    out = [c for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    out.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_rfc3339() if changed else previous["lastTransitionTime"],  # type: ignore[index]
            "observedGeneration": generation,
        }
    )
    return sorted(out, key=lambda c: str(c["type"]))


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def round_status(state: RoundSnapshot, retries: int, epsilon: float | None = None) -> Object:
    """FederatedRound status from the aggregator's round; `epsilon`: the training's epsilon
    once this round is released."""
    status: Object = {
        "phase": state.phase,
        "expected": len(state.participants),
        "reported": len(state.reported),
        "reportedClients": list(state.reported),
        "droppedClients": list(state.dropped),
        "dropped": len(state.dropped),
        "retries": retries,
        "clients": {c.client_id: {"state": c.state, "reason": c.reason} for c in state.clients},
        "reason": state.reason,
        "metrics": dict(state.metrics),
        "aggregateDigest": state.model_digest,
        "bytesReceived": int(state.bytes_received),
        "startTime": rfc3339(state.started_unix),
    }
    if state.privacy is not None:
        status["privacy"] = state.privacy.to_record()
    if epsilon is not None and math.isfinite(epsilon):  # noiseMultiplier 0: infinite, not JSON
        status["epsilon"] = epsilon
    if state.finished_unix:
        status["completionTime"] = rfc3339(state.finished_unix)
        status["duration"] = duration(state.finished_unix - state.started_unix)
    return status
