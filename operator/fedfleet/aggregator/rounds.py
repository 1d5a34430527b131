"""One round's bookkeeping: who was selected, what each client did, and the round's metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "Pending"
    TRAINING = "Training"
    AGGREGATING = "Aggregating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Kind(StrEnum):
    TRAIN = "train"
    EVALUATE = "evaluate"


class ClientPhase(StrEnum):
    SELECTED = "selected"
    TRAINING = "training"
    UPLOADING = "uploading"
    REPORTED = "reported"
    DROPPED = "dropped"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})


@dataclass
class ClientRecord:
    client_id: str
    state: ClientPhase = ClientPhase.SELECTED
    reason: str = ""
    session: str | None = None
    joined: float = 0.0  # when it joined the round (its session began)
    left: float = 0.0  # when it reported or was dropped


def weighted_means(reports: dict[str, tuple[int, dict[str, float]]], prefix: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for examples, metrics in reports.values():
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + examples * value
            weights[key] = weights.get(key, 0.0) + examples
    return {f"{prefix}{k}": totals[k] / weights[k] for k in totals if weights[k] > 0}


@dataclass
class Round:
    number: int
    kind: Kind
    participants: list[str]
    min_clients: int
    deadline: float
    model_version: int  # the model this round starts from (train) or evaluates
    started: float = field(default_factory=time.time)
    phase: Phase = Phase.PENDING
    reason: str = ""
    finished: float = 0.0
    model_digest: str = ""
    clients: dict[str, ClientRecord] = field(default_factory=dict)
    train_reports: dict[str, tuple[int, dict[str, float]]] = field(default_factory=dict)
    eval_reports: dict[str, tuple[int, dict[str, float]]] = field(default_factory=dict)
    secure: Any = None  # a SecureRound when SecAgg+ protects this round
    privacy: dict[str, Any] | None = None  # RoundPrivacy.to_record() once a DP round is released
    max_update_norm: float = -1.0  # largest plaintext update norm accepted (DP rounds)
    bytes_received: int = 0  # update payload bytes of the accepted uploads (after compression)
    produced_evaluation: dict[str, float] = field(default_factory=dict)  # eval_* of the model it made
    population: int = 0  # clients cohorts are drawn from, as the controller said (DP accounting); 0 unknown
    epsilon: float | None = None  # the training's epsilon once this DP round was released
    aborted: str = ""  # why the controller aborted it (AbortRound): it fails whatever was uploaded

    def __post_init__(self) -> None:
        self.clients = {cid: ClientRecord(cid) for cid in self.participants}

    @property
    def is_open(self) -> bool:
        return self.phase == Phase.TRAINING

    def with_state(self, state: ClientPhase) -> list[str]:
        return [cid for cid, rec in self.clients.items() if rec.state == state]

    @property
    def reported(self) -> list[str]:
        return self.with_state(ClientPhase.REPORTED)

    @property
    def dropped(self) -> list[str]:
        return self.with_state(ClientPhase.DROPPED)

    @property
    def all_accounted(self) -> bool:
        return len(self.reported) + len(self.dropped) == len(self.participants)

    @property
    def produced_version(self) -> int:
        """The model this round's metrics describe: the one it produced (train), or evaluated."""
        return self.number if self.kind == Kind.TRAIN else self.model_version

    def evaluation(self) -> dict[str, float]:
        """Clients' held-out metrics of the model this round started from (`model_version`):
        a training round's belong to the round before it, which produced that model."""
        return weighted_means(self.eval_reports, "eval_")

    def metrics(self) -> dict[str, float]:
        """train_* of this round and eval_* of the model it produced: for a training round that
        model is evaluated later (next round, or the final evaluation): `produced_evaluation`."""
        if self.kind == Kind.EVALUATE:
            return self.evaluation()
        return weighted_means(self.train_reports, "train_") | self.produced_evaluation

    def drop(self, client_id: str, reason: str, at: float = 0.0) -> None:
        record = self.clients[client_id]
        if record.state != ClientPhase.REPORTED:
            record.state, record.reason = ClientPhase.DROPPED, reason
            record.left = record.left or at

    def report(self, client_id: str, at: float) -> None:
        record = self.clients[client_id]
        record.state, record.left = ClientPhase.REPORTED, at

    def client_seconds(self) -> dict[str, float]:
        """Each client's time in the closed round: from its join to its report, its drop or
        the round's close."""
        return {cid: (r.left or self.finished) - r.joined for cid, r in self.clients.items() if r.joined}

    def to_record(self) -> dict[str, Any]:
        """What round.json keeps, and what the controller copies into FederatedRound status."""
        record: dict[str, Any] = {
            "round": self.number,
            "kind": self.kind.value,
            "phase": self.phase.value,
            "participants": self.participants,
            "reported": self.reported,
            "dropped": self.dropped,
            "min_clients": self.min_clients,
            "reason": self.reason,
            "metrics": self.metrics(),
            "model_version": self.produced_version,
            "base_version": self.model_version,
            "bytes_received": self.bytes_received,
            "model_digest": self.model_digest,
            "started": self.started,
            "finished": self.finished,
            "deadline": self.deadline,
            "clients": {cid: {"state": r.state.value, "reason": r.reason} for cid, r in self.clients.items()},
        }
        if self.privacy is not None:
            record["privacy"] = self.privacy
        if self.epsilon is not None:
            record["epsilon"] = self.epsilon  # the lineage record carries it (provenance.ledger)
        return record
