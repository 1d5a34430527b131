"""Prometheus metrics of the operator, served on its metrics port."""

from prometheus_client import Counter, Histogram

ROUNDS = Counter("fedfleet_rounds_total", "Rounds that ended, by final phase", ["training", "phase"])
ROUND_SECONDS = Histogram(
    "fedfleet_round_duration_seconds",
    "Duration of successful rounds",
    ["training"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
)
CLIENT_RESTARTS = Counter(
    "fedfleet_client_restarts_total", "Client pods started again after a failure", ["training"]
)
RECONCILE_ERRORS = Counter("fedfleet_reconcile_errors_total", "Reconcile passes that raised", ["training"])
