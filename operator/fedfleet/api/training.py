"""The FederatedTraining resource (group fedfleet.io, version v1alpha1).

One model serves the local runner, the aggregator, the clients and the operator, so a manifest
means the same thing everywhere; the CRD schema is generated from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, model_validator

from fedfleet.api.base import SpecModel
from fedfleet.api.lineage import LineageSpec
from fedfleet.api.pods import AggregatorSettings, PodSettings
from fedfleet.api.privacy import PrivacySpec
from fedfleet.api.release import ReleaseSpec
from fedfleet.api.retention import HistorySpec, RetentionSpec
from fedfleet.api.tls import TlsSpec
from fedfleet.secagg.params import CLIP_RANGE, MAX_WEIGHT_RANGE
from fedfleet.strategies import STRATEGY_NAMES

API_VERSION = "fedfleet.io/v1alpha1"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SHA256_DIGEST = r"^(sha256:[0-9a-f]{64})?$"


class TaskSpec(SpecModel):
    """What gets trained: a built-in task name or `package.module:Class`, and its settings."""

    name: str = Field(min_length=1, description="Built-in task (digits-mlp) or package.module:Class.")
    config: dict[str, Any] = Field(default_factory=dict, description="Task settings, checked by the task.")


class ModelSpec(SpecModel):
    """Where the base model comes from and the digest it must match."""

    source: str = Field(
        default="", description="Local path, mounted volume path or hub id; empty: task builds it."
    )
    digest: str = Field(default="", pattern=SHA256_DIGEST, description="Pinned sha256 of the base weights.")
    seed: int = Field(default=0, ge=0, description="Seed of the initial weights and of client training.")


class LabelSelector(SpecModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class SitesSpec(SpecModel):
    """Which FederationSites take part: a list of names, or a label selector (cluster only)."""

    names: list[Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]] = Field(
        default_factory=list,
        max_length=10_000,
        description="FederationSite names: DNS labels (lowercase letters, digits, '-'; at most 63).",
    )
    selector: LabelSelector | None = Field(default=None, description="Label selector over FederationSites.")

    @model_validator(mode="after")
    def _one_way(self) -> SitesSpec:
        if bool(self.names) == (self.selector is not None):
            raise ValueError("give exactly one of names or selector")
        if len(set(self.names)) != len(self.names):
            raise ValueError("site names must be unique")
        return self


class StrategySpec(SpecModel):
    """How the aggregator turns the round's mean update into the next global model."""

    name: str = Field(
        default="FedAvg",
        description="Aggregation strategy.",
        json_schema_extra={"enum": list[JsonValue](STRATEGY_NAMES)},
    )
    proximal_mu: float = Field(default=0.01, ge=0, description="FedProx: weight of the proximal term.")
    server_learning_rate: float = Field(default=1.0, gt=0, description="Step size of the server update.")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="FedAdam: first-moment decay.")
    beta2: float = Field(default=0.99, ge=0, lt=1, description="FedAdam: second-moment decay.")
    tau: float = Field(default=1e-3, gt=0, description="FedAdam: adaptivity (epsilon).")
    aggregation: Literal["mean", "trimmedMean", "median"] = Field(
        default="mean",
        description="How updates combine: the example-weighted mean, or (plaintext rounds only, "
        "each client counting once) the coordinate-wise trimmed mean or median.",
    )
    trim_fraction: float = Field(
        default=0.1, ge=0, lt=0.5, description="trimmedMean: share of clients cut at each end, per value."
    )

    @model_validator(mode="after")
    def _known(self) -> StrategySpec:
        if self.name not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {self.name!r}; one of {', '.join(STRATEGY_NAMES)}")
        return self


class SecureAggregationSpec(SpecModel):
    """SecAgg+: the aggregator sees only the sum of the surviving clients' updates."""

    enabled: bool = Field(default=True, description="Mask every update; needs at least 3 clients per round.")
    neighbours: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="k; 0 derives it from n, dropoutRate and failureProbability; n-1 is classic SecAgg.",
    )
    threshold_ratio: float = Field(
        default=0,
        ge=0,
        le=1,
        description="t = ceil(ratio x k) if that is above the default, the least t strictly above k/2.",
    )
    dropout_rate: float = Field(
        default=0.05, ge=0, lt=0.5, description="Share of clients expected to drop during a round (for k)."
    )
    failure_probability: float = Field(
        default=1e-4,
        gt=0,
        lt=1,
        description="Acceptable chance that dropouts at dropoutRate abort a round (for k).",
    )
    clip_range: float = Field(
        default=8.0,
        ge=CLIP_RANGE[0],
        le=CLIP_RANGE[1],
        allow_inf_nan=False,
        description="Update values are clipped to [-c, c] before encoding.",
    )
    max_weight: float = Field(
        default=100_000,
        ge=MAX_WEIGHT_RANGE[0],
        le=MAX_WEIGHT_RANGE[1],
        allow_inf_nan=False,
        description="Example counts above it are capped when weighting.",
    )
    stage_timeout_seconds: float = Field(
        default=60, gt=0, le=3600, description="Deadline of each key-exchange stage."
    )


class CompressionSpec(SpecModel):
    """Quantized uploads: fewer bytes on the wire for a bounded, unbiased error per value."""

    bits: Literal[32, 16, 8, 4] = Field(
        default=32,
        description="Bits per update value on the wire; 32 sends float32. With SecAgg+ the masked "
        "lane is bits plus ceil(log2 n) headroom, rounded up to 8, 16 or 32.",
    )
    block_size: int = Field(
        default=1024,
        ge=16,
        le=65_536,
        multiple_of=16,
        description="Values per absmax scale without SecAgg+ (SecAgg+ uses one range, clipRange).",
    )


class UpdatesSpec(SpecModel):
    """Bounds on what one client's upload may carry and how long it may take."""

    max_examples: int = Field(
        default=10_000_000,
        ge=1,
        le=2**53,
        description="Largest num_examples an update or report may claim; more is refused.",
    )
    max_update_norm: float = Field(
        default=0,
        ge=0,
        allow_inf_nan=False,
        description="Plaintext rounds: refuse an update whose L2 norm exceeds it; 0 = no bound.",
    )
    upload_idle_seconds: float = Field(
        default=60, gt=0, le=3600, description="An upload that sends nothing for this long is refused."
    )
    upload_timeout_seconds: float = Field(
        default=900, gt=0, le=7 * 24 * 3600, description="Longest one upload may take, start to end."
    )


class RetrySpec(SpecModel):
    """How failures are retried: client restarts with backoff, and whole rounds."""

    max_attempts: int = Field(
        default=3, ge=1, le=100, description="Starts of one client before it is given up."
    )
    backoff_seconds: float = Field(
        default=2.0, ge=0, le=3600, description="First restart delay; doubles each time."
    )
    max_round_attempts: int = Field(
        default=2, ge=1, le=100, description="Tries of one round before the training fails."
    )


class FederatedTrainingSpec(SpecModel):
    """The desired federation: task, sites, rounds, and the rules every round follows."""

    task: TaskSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    rounds: int = Field(ge=1, le=100_000, description="Training rounds.")
    sites: SitesSpec
    clients_per_site: int = Field(default=1, ge=1, le=1000, description="Client pods at every site.")
    min_clients: int = Field(default=1, ge=1, description="Updates a round needs to succeed at its deadline.")
    round_timeout_seconds: float = Field(default=600, gt=0, le=7 * 24 * 3600, description="Round deadline.")
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    secure_aggregation: SecureAggregationSpec = Field(default_factory=SecureAggregationSpec)
    updates: UpdatesSpec = Field(default_factory=UpdatesSpec)
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    lineage: LineageSpec = Field(default_factory=LineageSpec)
    release: ReleaseSpec = Field(default_factory=ReleaseSpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    history: HistorySpec = Field(default_factory=HistorySpec)
    tls: TlsSpec = Field(default_factory=TlsSpec)
    aggregator: AggregatorSettings = Field(default_factory=AggregatorSettings)
    client: PodSettings = Field(default_factory=PodSettings)
    suspend: bool = Field(
        default=False,
        description="Pause the training (cluster only): the round in flight finishes or is aborted "
        "(suspendPolicy), the client pods are removed, the aggregator and its checkpoints stay; "
        "false again resumes exactly where it stopped.",
    )
    suspend_policy: Literal["FinishRound", "AbortRound"] = Field(
        default="FinishRound",
        description="What a suspend does with the round in flight: FinishRound lets it close; "
        "AbortRound fails it at once (its uploads discarded, not counted against "
        "retry.maxRoundAttempts) and runs it again from its start on resume.",
    )

    def expected_clients(self, site_count: int | None = None) -> int:
        sites = len(self.sites.names) if site_count is None else site_count
        return sites * self.clients_per_site

    def semantic_errors(self, site_count: int | None = None) -> list[str]:
        """Checks a schema cannot express; the operator reports them as Ready=False InvalidSpec."""
        errors = []
        expected = self.expected_clients(site_count)
        if self.min_clients > expected:
            errors.append(
                f"spec.minClients: {self.min_clients} is more than the {expected} clients the sites run"
            )
        if self.secure_aggregation.enabled and expected < 3:
            errors.append(
                f"spec.secureAggregation: needs at least 3 clients, the sites run {expected}; "
                "disable it for smaller federations"
            )
        privacy = self.privacy
        robust = self.strategy.aggregation
        if robust != "mean" and self.secure_aggregation.enabled:
            errors.append(
                f"spec.strategy.aggregation: {robust} needs every update in the clear and SecAgg+ "
                "releases only their sum; disable spec.secureAggregation or use mean"
            )
        if robust != "mean" and privacy.enabled:
            errors.append(
                f"spec.strategy.aggregation: {robust} does not combine with spec.privacy "
                "(the noise is calibrated to the sum of clipped updates); use mean"
            )
        if privacy.enabled and privacy.mode == "distributed" and not self.secure_aggregation.enabled:
            errors.append(
                "spec.privacy.mode: distributed noise needs spec.secureAggregation.enabled "
                "(unmasked, each client's small noise share would hide nothing); use mode central"
            )
        elif privacy.enabled and privacy.mode == "distributed":
            # SecAgg+ truncates values to [-clipRange, clipRange]; truncated noise is not Gaussian.
            # A client's value is at most clipNorm plus its share, whose std is largest at the
            # smallest cohort a round can run with (3, or minClients).
            c, z = privacy.clip_norm or 0.0, privacy.noise_multiplier or 0.0  # set: enabled
            needed = c + 6 * z * c / max(3, self.min_clients) ** 0.5
            clip_range = self.secure_aggregation.clip_range
            if clip_range < needed:
                errors.append(
                    f"spec.secureAggregation.clipRange: {clip_range:g} would truncate "
                    f"clients' noise shares; distributed privacy needs at least {needed:.3g} "
                    "(clipNorm + 6 noise share std at the smallest cohort)"
                )
        return errors


class ObjectMeta(SpecModel):
    model_config = SpecModel.model_config | {"extra": "ignore"}

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    namespace: str = Field(default="default", pattern=DNS_LABEL)
    labels: dict[str, str] = Field(default_factory=dict)


class FederatedTraining(SpecModel):
    """A whole manifest; `status` is owned by the controller and ignored on input."""

    model_config = SpecModel.model_config | {"extra": "ignore"}

    api_version: Literal["fedfleet.io/v1alpha1"]
    kind: Literal["FederatedTraining"]
    metadata: ObjectMeta
    spec: FederatedTrainingSpec
