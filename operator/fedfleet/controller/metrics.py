"""Prometheus metrics of the operator, served on its metrics port."""

from prometheus_client import Counter, Gauge, Histogram

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
# sites in their own clusters (the site gateway), by FederationSite "<namespace>/<name>"
SITE_CONNECTED = Gauge("fedfleet_site_connected", "1 while the site's agent holds its stream", ["site"])
SITE_CLIENTS_RUNNING = Gauge(
    "fedfleet_site_clients_running", "Client pods the site reports Running", ["site"]
)
SITE_GPUS_IN_USE = Gauge("fedfleet_site_gpus_in_use", "GPUs the site's running clients hold", ["site"])
SITE_REFUSED_WORK = Gauge("fedfleet_site_refused_work", "Clients the site's policy refuses", ["site"])
SITE_HEARTBEAT = Gauge(
    "fedfleet_site_last_heartbeat_seconds", "Unix time of the site's last message", ["site"]
)
# each site's figures per training, set from the training's aggregator (its counts only grow), by
# FederationSite "<namespace>/<name>" and training "<namespace>/<name>" (controller/site_accounts.py)
SITE_UPDATES_ACCEPTED = Gauge(
    "fedfleet_site_updates_accepted",
    "Updates of the site's clients the aggregator accepted",
    ["site", "training"],
)
SITE_UPDATES_REFUSED = Gauge(
    "fedfleet_site_updates_refused",
    "Updates of the site's clients the aggregator refused",
    ["site", "training"],
)
SITE_BYTES_RECEIVED = Gauge(
    "fedfleet_site_bytes_received",
    "Update bytes the aggregator read from the site's clients",
    ["site", "training"],
)
SITE_BYTES_SENT = Gauge(
    "fedfleet_site_bytes_sent", "Model bytes the aggregator sent to the site's clients", ["site", "training"]
)
SITE_CLIENT_SECONDS = Gauge(
    "fedfleet_site_client_seconds",
    "Time the site's clients spent in the training's rounds",
    ["site", "training"],
)
