"""One preflight for `fedfleet plan` and `fedfleet local run`: every check a manifest can fail
before a process starts, and the figures a team decides with (DP forecast, bytes per round)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.api.load import ManifestError
from fedfleet.api.training import FederatedTraining
from fedfleet.plan.privacy import PrivacyForecast, forecast
from fedfleet.plan.traffic import Traffic, traffic


@dataclass
class Plan:
    source: str  # the manifest's path: every error names it
    training: FederatedTraining
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    privacy: PrivacyForecast | None = None
    traffic: Traffic | None = None
    traffic_unknown: str = ""  # why bytes per round could not be worked out (e.g. no base model here)
    site_lines: list[str] = field(default_factory=list)  # with a kubeconfig: one line per site check

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self) -> None:
        """For callers that stop on a bad manifest: one ManifestError naming the file (exit 2)."""
        if self.errors:
            raise ManifestError("\n".join(f"{self.source}: {e}" for e in self.errors))


def preflight(
    training: FederatedTraining, source: Path | str, site_count: int | None = None, with_traffic: bool = True
) -> Plan:
    """Schema is checked by loading; this adds the semantic checks, the task's own config check,
    the DP forecast (zero rounds is an error) and the traffic figures."""
    from fedfleet.tasks.base import TaskError, load_task

    spec = training.spec
    plan = Plan(str(source), training, errors=list(spec.semantic_errors(site_count)))
    try:
        task = load_task(spec.task)  # a bad task config fails here, not in every client
    except TaskError as err:
        plan.errors.append(str(err))
        task = None
    clients = spec.expected_clients(site_count)
    if not plan.errors:
        plan.privacy = forecast(spec, clients)
        if plan.privacy is not None:
            plan.errors += plan.privacy.errors(spec.rounds)
            plan.warnings += plan.privacy.warnings(spec.rounds)
    if task is not None and with_traffic:
        plan.traffic, plan.traffic_unknown = _traffic(training, clients)
    return plan


def _traffic(training: FederatedTraining, clients: int) -> tuple[Traffic | None, str]:
    from fedfleet.models import ModelSourceError, initial_weights
    from fedfleet.tasks.base import TaskError

    try:
        weights = initial_weights(training.spec)
    except (ModelSourceError, TaskError, OSError) as err:
        return None, f"the initial model cannot be built here ({err})"
    return traffic(training.spec, weights, clients), ""
