"""Bounds on what crosses the site gateway, checked by both ends, and the translation of a
site's reported client into the pod summary the hub's client logic reads (so a remote client's
Pending, Failed or refused state is handled exactly as a local pod's)."""

from __future__ import annotations

from typing import Any

from fedfleet import vocabulary as vocab
from fedfleet.controller import resources as res
from fedfleet.provenance.policy import REFUSED_EXIT_CODE
from fedfleet.v1 import site_gateway_pb2 as pb

Object = dict[str, Any]
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # gRPC's limit on the gateway, both ways
MAX_TRAININGS = 8  # listed per Work message (and trainings a site reports)
MAX_CLIENTS = 1000  # per training at one site
MAX_MANIFEST_BYTES = 256 * 1024
MAX_PEM_BYTES = 16 * 1024
MAX_NAME = 253
MAX_MESSAGE = 300
PHASES = frozenset({"Pending", "Running", "Succeeded", "Failed", "Refused"})
REFUSED = "Refused"


class WireError(ValueError):
    """A message past a bound or malformed: the stream is refused with this reason."""


def check_state(state: pb.SiteState) -> None:
    if len(state.clients) > MAX_TRAININGS * MAX_CLIENTS:
        raise WireError(f"a site state lists at most {MAX_TRAININGS * MAX_CLIENTS} clients")
    if len(state.certificate_requests) > MAX_CLIENTS:
        raise WireError(f"a site state carries at most {MAX_CLIENTS} certificate requests")
    for client in state.clients:
        for value in (
            client.training_namespace,
            client.training,
            client.client_id,
            client.created,
            client.finished,
        ):
            if len(value) > MAX_NAME:
                raise WireError(f"a client state field is longer than {MAX_NAME} characters")
        if client.phase not in PHASES:
            raise WireError(f"a client state's phase must be one of {sorted(PHASES)}")
        if len(client.message) > MAX_MESSAGE or len(client.scheduled) > 8:
            raise WireError(f"a client state's message is longer than {MAX_MESSAGE} characters")
    for request in state.certificate_requests:
        if len(request.csr_pem) > MAX_PEM_BYTES:
            raise WireError(f"a certificate request is larger than {MAX_PEM_BYTES} bytes")
        if max(len(request.training_namespace), len(request.training), len(request.client_id)) > MAX_NAME:
            raise WireError(f"a certificate request names something longer than {MAX_NAME} characters")


def check_work(work: pb.SiteWork) -> None:
    if len(work.trainings) > MAX_TRAININGS or len(work.ended) > 4 * MAX_TRAININGS:
        raise WireError(f"work lists at most {MAX_TRAININGS} trainings")
    for training in work.trainings:
        if len(training.manifest_json) > MAX_MANIFEST_BYTES:
            raise WireError(f"a training manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        if len(training.clients) > MAX_CLIENTS:
            raise WireError(f"a training lists at most {MAX_CLIENTS} clients for one site")
        if (
            max(
                len(training.namespace),
                len(training.name),
                len(training.uid),
                len(training.aggregator_address),
            )
            > MAX_NAME
        ):
            raise WireError(f"a training field is longer than {MAX_NAME} characters")
        for client in training.clients:
            if len(client.certificate_pem) > MAX_PEM_BYTES or len(client.ca_pem) > 4 * MAX_PEM_BYTES:
                raise WireError("a client certificate is past its size bound")


def pod_summary(site: res.SiteRef, state: pb.SiteClientState) -> Object:
    """A remote client as the hub's client logic reads a pod (`observed.pod_summary`'s shape).
    A site's policy refusal reads as a client that exited 78 with the reason as its message."""
    failed = state.phase in ("Failed", REFUSED)
    annotations = {vocab.ANNOTATION_ATTEMPT: str(state.attempt)}
    if state.given_up:
        annotations[vocab.ANNOTATION_GIVEN_UP] = "true"
    containers: list[Object] = []
    if failed or state.phase == "Succeeded":
        code = REFUSED_EXIT_CODE if state.phase == REFUSED else state.exit_code
        terminated = {
            "exitCode": code,
            "message": state.message,
            "finishedAt": state.finished or state.created,
        }
        containers = [{"name": "client", "state": {"terminated": terminated}}]
    conditions = []
    if state.scheduled == "False":
        conditions = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": state.message}
        ]
    return {
        "metadata": {
            "name": res.client_pod_name(state.training, state.client_id),
            "namespace": site.namespace,
            "labels": res.labels(
                state.training, vocab.COMPONENT_CLIENT, site=site.name, client=state.client_id
            ),
            "annotations": annotations,
            "creationTimestamp": state.created or None,
            "deletionTimestamp": None,
        },
        "status": {
            "phase": "Failed" if failed else state.phase,
            "containerStatuses": containers,
            "conditions": conditions,
        },
    }


def placeholder(site: res.SiteRef, training: tuple[str, str], client: str, attempt: int) -> Object:
    """A client started before this operator did, at a site that has not reported since: taken
    as running (not started again) until the site says otherwise."""
    state = pb.SiteClientState(
        training_namespace=training[0],
        training=training[1],
        client_id=client,
        attempt=attempt,
        phase="Running",
    )
    return pod_summary(site, state)
