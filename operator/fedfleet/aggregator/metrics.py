"""Prometheus metrics of the aggregator, served on `--metrics-port` when one is given."""

from prometheus_client import Counter

AUTH_REFUSALS = Counter(
    "fedfleet_aggregator_auth_refusals_total",
    "Calls refused because of the caller's certificate, by reason",
    ["reason"],
)
