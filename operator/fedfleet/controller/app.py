"""`fedfleet operator`: run the kopf operator with our handlers, metrics and health endpoint."""

from __future__ import annotations

import os
import sys

import kopf
from prometheus_client import start_http_server


async def run_operator(
    namespaces: list[str], standalone: bool, peering: str, liveness: str, metrics_port: int
) -> None:
    from fedfleet.controller import handlers  # noqa: F401  (registers the handlers)

    json_logs = os.environ.get("FEDFLEET_LOG_FORMAT", "json" if not sys.stderr.isatty() else "") == "json"
    debug = os.environ.get("FEDFLEET_LOG_LEVEL", "").upper() == "DEBUG"
    kopf.configure(
        debug=debug, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL, log_refkey="object"
    )

    if metrics_port:
        start_http_server(metrics_port)
    settings = kopf.OperatorSettings()
    # A namespaced install names its namespaces exactly: kopf need not list the cluster's
    # namespaces (the chart grants no such list, and kopf would log each refusal as a warning)
    # nor watch CRDs for new kinds (the chart installs them before the operator starts).
    settings.scanning.disabled = bool(namespaces)
    await kopf.operator(
        settings=settings,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        peering_name=None if standalone else peering,
        liveness_endpoint=liveness or None,
    )
