"""What the operator writes to status: typed, so the CRDs' status schemas are generated from
these models (`api/crds.py`) and nothing the operator writes can be pruned by an API server.

Users read the top-level fields (kubectl columns, conditions, metrics, lineage); the
operator's own bookkeeping, which it reads back after a restart, lives apart under
`status.controller` (see `ControllerState`). Field names are camelCase on the wire, as
Kubernetes status is. Reading is lenient (`extra="ignore"`: a status written by an older
operator still parses); writing dumps by alias without unset (None) fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from fedfleet import vocabulary as vocab

DATE_TIME: dict[str, Any] = {"format": "date-time"}


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        """The JSON a status write sends (by alias, None fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(StatusModel):
    """A Kubernetes-style condition (one per type)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    observed_generation: int | None = None


CONDITIONS_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class SiteRecord(StatusModel):
    """A site a training runs on, as the operator last resolved it."""

    name: str
    namespace: str = Field(description="Where its client pods and their Secrets are (remote: at the hub).")


class ControllerState(StatusModel):
    """The operator's own record of a training, read back by a restarted operator: not for
    users (they read the fields beside it), and never edited by them (status subresource).

    Kept in status rather than annotations: one status patch writes it together with what it
    explains (atomic, one request, the status RBAC the operator already has), and a user's
    `kubectl annotate` or `apply` cannot reach it.
    """

    client_starts: dict[str, int] = Field(
        default_factory=dict, description="Client id -> pod starts so far (restarts count; resumes do not)."
    )
    round_failures: dict[str, int] = Field(
        default_factory=dict, description="Round number -> failed tries (aborted ones do not count)."
    )
    last_failure: str = Field(default="", description="Reason of the latest failed round.")
    evaluated: bool = Field(default=False, description="The final model's evaluation round is done.")
    waiting_since: float | None = Field(
        default=None, description="Unix time the next round began waiting for clients."
    )
    suspended_clients: list[str] = Field(
        default_factory=list,
        description="Clients whose pods a suspend removed: their next start is a resume.",
    )
    sites: list[SiteRecord] = Field(
        default_factory=list,
        description="The sites the training runs on, in data-partition order. Once it started, one "
        "deleted since keeps its place (its clients are revoked, the others' partitions stay) and "
        "the cleanup finds its namespace.",
    )


class ReleaseStatus(StatusModel):
    """The model pushed to spec.release once the training succeeded."""

    phase: Literal["Running", "Succeeded", "Failed"] = "Running"
    reference: str = ""
    digest: str | None = Field(default=None, description="The artifact's manifest digest.")
    model_digest: str | None = None
    lineage_head: str | None = None
    attempts: int = 0
    message: str = ""


class TrainingStatus(StatusModel):
    """FederatedTraining status."""

    phase: vocab.TrainingPhase = vocab.PENDING
    current_round: int = Field(default=0, description="The round in flight; 0 when none.")
    completed_rounds: int = Field(default=0, description="Training rounds whose model is checkpointed.")
    round_progress: str | None = Field(default=None, description="completed/total rounds, for printing")
    clients_ready: str | None = Field(default=None, description="ready/expected clients, for printing")
    expected_clients: int | None = None
    last_loss: float | None = None
    epsilon: float | None = Field(default=None, description="Privacy budget spent so far (DP).")
    epsilon_rounded: float | None = Field(
        default=None, description="epsilon to 3 significant digits, for printing"
    )
    held_out: str | None = Field(default=None, description="the newest model's held-out metric, for printing")
    reason: str | None = Field(default=None, description="why the training is in its phase")
    aggregator_restarts: int = Field(default=0, description="Restarts of the aggregator pod seen.")
    release: ReleaseStatus | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict, description="The latest round's metrics (at the end: the final model's)."
    )
    model_digest: str | None = None
    lineage_head: str | None = Field(default=None, description="Digest of the newest lineage record.")
    lineage_public_key: str | None = Field(
        default=None, description="PEM of the key signing the lineage records."
    )
    lineage_key_fingerprint: str | None = Field(
        default=None, description="sha256 of the raw lineage public key."
    )
    refused_clients: dict[str, str] = Field(
        default_factory=dict, description="Clients whose site policy refused this training, with the reason."
    )
    removed_sites: list[str] = Field(
        default_factory=list,
        description="Sites gone since the training started (deleted at the hub): the aggregator "
        "refuses their clients and rounds go on without them.",
    )
    message: str = ""
    start_time: str | None = Field(
        default=None,
        description="When the operator first made pods from the spec; from then on the fields "
        "baked into them are immutable.",
        json_schema_extra=DATE_TIME,
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation the operator last acted on."
    )
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    controller: ControllerState = Field(
        default_factory=ControllerState, description="The operator's bookkeeping (not for users)."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class RoundClient(StatusModel):
    state: str = ""
    reason: str = ""


class RoundPrivacyStatus(StatusModel):
    """Differential privacy the released round carried."""

    mode: str
    clip_norm: float
    noise_multiplier: float
    effective_noise_multiplier: float
    expected_clients: int
    survivors: int
    max_update_norm: float


class RoundStatus(StatusModel):
    """FederatedRound status, copied from the aggregator's record of the round."""

    phase: vocab.RoundPhase = "Pending"
    expected: int = 0
    reported: int = 0
    reported_clients: list[str] = Field(default_factory=list)
    dropped_clients: list[str] = Field(default_factory=list)
    dropped: int = 0
    retries: int = 0
    clients: dict[str, RoundClient] = Field(default_factory=dict)
    reason: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    aggregate_digest: str = ""
    bytes_received: int = Field(default=0, description="Update bytes accepted (after compression).")
    epsilon: float | None = Field(
        default=None, description="Training epsilon once this round was released (DP)."
    )
    privacy: RoundPrivacyStatus | None = None
    start_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    completion_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    duration: str | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)


class SiteTrainingAccount(StatusModel):
    """What the site's clients did in one training, as its aggregator counted them."""

    updates_accepted: int = 0
    updates_refused: int = 0
    bytes_received: int = Field(default=0, description="Update bytes the aggregator read from its clients.")
    bytes_sent: int = Field(default=0, description="Model bytes the aggregator sent to its clients.")
    client_seconds: float = Field(default=0.0, description="Its clients' time in rounds.")
    updated: str | None = Field(default=None, json_schema_extra=DATE_TIME)


class SiteStatus(StatusModel):
    """FederationSite status: readiness (the operator), a remote site's connection (the site
    gateway), and the site's figures per training (the operator, from each aggregator)."""

    ready: bool = False
    gpus: int = 0
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    # a remote site (spec.remote), written by the hub's site gateway (sites/gateway.py)
    connected: bool | None = Field(
        default=None, description="The site's agent holds its stream to the gateway."
    )
    last_heartbeat: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    agent_version: str | None = None
    clients_running: int | None = None
    gpus_in_use: int | None = None
    refused_work: int | None = Field(default=None, description="Clients the site's policy refused.")
    enrolled: str | None = Field(
        default=None, description="When the agent enrolled.", json_schema_extra=DATE_TIME
    )
    # accounting (controller/site_accounts.py): per training, and totals over those listed
    trainings: dict[str, SiteTrainingAccount] | None = Field(
        default=None,
        description='"<namespace>/<training>" -> the site\'s figures in it (the 50 updated last).',
    )
    updates_accepted: int | None = None
    updates_refused: int | None = None
    bytes_received: int | None = None
    bytes_sent: int | None = None
    client_seconds: float | None = None
