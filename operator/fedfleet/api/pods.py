"""Pod settings a manifest may give the aggregator and the clients (image, resources, placement)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator

from fedfleet import __version__
from fedfleet.api.base import SpecModel

# the hub chart sets FEDFLEET_IMAGE so that pods default to the operator's own image
DEFAULT_IMAGE = os.environ.get("FEDFLEET_IMAGE") or f"ghcr.io/fedfleet/fedfleet:{__version__}"
Quantity = str | int


class Resources(SpecModel):
    """Kubernetes resource requests and limits, e.g. limits: {nvidia.com/gpu: 1}."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class PodSettings(SpecModel):
    image: str = Field(
        default=DEFAULT_IMAGE, min_length=1, description="Container image with the fedfleet entrypoint."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)


class AggregatorSettings(PodSettings):
    port: int = Field(default=50051, ge=1, le=65535, description="gRPC port of the aggregator Service.")
    metrics_port: int = Field(
        default=9090,
        ge=1,
        le=65535,
        description="Prometheus metrics (refusal counters, rounds) and the liveness probe; not mTLS.",
    )
    staging_slots: int = Field(
        default=2, ge=1, le=64, description="Uploads received at once (memory: slots x model)."
    )
    state_volume_size: str = Field(
        default="", description="Size of a state PersistentVolumeClaim; empty: emptyDir."
    )
    model_volume_claim: str = Field(
        default="",
        description=(
            "An existing PersistentVolumeClaim (training's namespace) with the base model, mounted "
            "read-only at modelMountPath, for tasks that build the initial model from spec.model.source."
        ),
    )
    model_mount_path: str = Field(
        default="/data", pattern=r"^/", description="Where modelVolumeClaim is mounted in the aggregator."
    )

    @model_validator(mode="after")
    def _distinct_ports(self) -> AggregatorSettings:
        if self.metrics_port == self.port:
            raise ValueError(
                f"metricsPort {self.metrics_port} is also the gRPC port; give them different ports"
            )
        return self
