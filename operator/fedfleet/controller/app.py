"""`fedfleet operator`: run the kopf operator with our handlers, metrics and health endpoint."""

from __future__ import annotations

import kopf
from prometheus_client import start_http_server


async def run_operator(
    namespaces: list[str], standalone: bool, peering: str, liveness: str, metrics_port: int
) -> None:
    from fedfleet.controller import handlers  # noqa: F401  (registers the handlers)

    if metrics_port:
        start_http_server(metrics_port)
    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        peering_name=peering,
        liveness_endpoint=liveness or None,
    )
