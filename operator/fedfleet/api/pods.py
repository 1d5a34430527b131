"""Pod settings a manifest may give the aggregator and the clients: image, resources, placement,
and a pod template merged over what the operator generates (see `controller/resources.py`)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator

from fedfleet import __version__
from fedfleet.api.base import SpecModel

# the image a pod runs when neither the manifest nor the hub chart (FEDFLEET_IMAGE) names one
DEFAULT_IMAGE = f"ghcr.io/fedfleet/fedfleet:{__version__}"
Quantity = str | int
# Where the operator mounts what the protocol needs; a template may not mount over, under or above them.
MANIFEST_DIR = "/etc/fedfleet"
SECRETS_DIR = "/var/run/fedfleet"  # tls/ and lineage/
STATE_PATH = "/var/lib/fedfleet"
DATA_PATH = "/data"
SCRATCH_PATH = "/tmp"
OPERATOR_PATHS = (MANIFEST_DIR, SECRETS_DIR, STATE_PATH, DATA_PATH, SCRATCH_PATH)
OPERATOR_VOLUMES = frozenset({"manifest", "tmp", "tls", "lineage", "state", "model", "data"})


def _overlaps(path: str, other: str) -> bool:
    a, b = path.rstrip("/") or "/", other.rstrip("/") or "/"
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


class PodTemplateMetadata(SpecModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Added to the pods; fedfleet's own win.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Added to the pods; fedfleet's own win."
    )


class LocalObjectReference(SpecModel):
    name: str = Field(min_length=1, max_length=253)


class PodSecurity(SpecModel):
    """The pod securityContext fields a template may set; non-root and seccomp stay fedfleet's."""

    run_as_user: int | None = Field(default=None, ge=1, description="Another non-root uid (image's own).")
    run_as_group: int | None = Field(default=None, ge=1)
    fs_group: int | None = Field(default=None, ge=1)
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    supplemental_groups: list[int] = Field(default_factory=list)


def _named(items: list[dict[str, Any]], what: str) -> list[str]:
    names = []
    for i, item in enumerate(items):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what}[{i}]: needs a name")
        names.append(name)
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"{what}: {', '.join(duplicates)} given more than once")
    return names


class PodTemplateSpec(SpecModel):
    """The pod spec fields a template may set. The operator owns the container's command,
    args, ports, probes, restart policy, the volumes and mounts the protocol needs, the
    restricted security settings and `automountServiceAccountToken: false`."""

    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    priority_class_name: str = ""
    service_account_name: str = Field(default="", description="Its token is not mounted.")
    affinity: dict[str, Any] = Field(default_factory=dict)
    topology_spread_constraints: list[dict[str, Any]] = Field(default_factory=list)
    env: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra container env (EnvVar); fedfleet's own names win."
    )
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="Extra volumes (Volume).")
    volume_mounts: list[dict[str, Any]] = Field(
        default_factory=list, description="Mounts of those volumes in the container (VolumeMount)."
    )
    security_context: PodSecurity = Field(default_factory=PodSecurity)

    @model_validator(mode="after")
    def _consistent(self) -> PodTemplateSpec:
        _named(self.env, "env")
        volumes = _named(self.volumes, "volumes")
        if taken := sorted(set(volumes) & OPERATOR_VOLUMES):
            raise ValueError(f"volumes: {', '.join(taken)} is a volume the operator mounts; rename it")
        for i, mount in enumerate(self.volume_mounts):
            name, path = mount.get("name"), mount.get("mountPath")
            if name not in volumes:
                raise ValueError(f"volumeMounts[{i}]: {name!r} is not one of the template's volumes")
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"volumeMounts[{i}].mountPath: needs an absolute path")
            if clash := next((p for p in OPERATOR_PATHS if _overlaps(path, p)), None):
                raise ValueError(
                    f"volumeMounts[{i}].mountPath: {path} overlaps {clash}, where the operator mounts"
                )
        return self


class PodTemplate(SpecModel):
    """Merged over the pods the operator generates (what it owns wins; docs/install.md)."""

    metadata: PodTemplateMetadata = Field(default_factory=PodTemplateMetadata)
    spec: PodTemplateSpec = Field(default_factory=PodTemplateSpec)


class Resources(SpecModel):
    """Kubernetes resource requests and limits, e.g. limits: {nvidia.com/gpu: 1}."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class PodSettings(SpecModel):
    # No default in the schema: an API server would write it into every stored object that has
    # this section, and the operator's FEDFLEET_IMAGE could no longer apply (container_image).
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Container image with the fedfleet entrypoint; unset: the operator's (FEDFLEET_IMAGE).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    pod_template: PodTemplate = Field(default_factory=PodTemplate)

    @property
    def container_image(self) -> str:
        """The manifest's image, else the one the hub chart passes the operator, else the built-in."""
        return self.image or os.environ.get("FEDFLEET_IMAGE") or DEFAULT_IMAGE


class AggregatorSettings(PodSettings):
    port: int = Field(default=50051, ge=1, le=65535, description="gRPC port of the aggregator Service.")
    metrics_port: int = Field(
        default=9090,
        ge=1,
        le=65535,
        description="Prometheus metrics (refusal counters, rounds) and the liveness probe; not mTLS.",
    )
    staging_slots: int = Field(
        default=1, ge=1, le=64, description="Float uploads received at once (memory: slots x model)."
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

    external_address: str = Field(
        default="",
        max_length=253,
        pattern=r"^$|^[A-Za-z0-9.-]+:[0-9]{1,5}$",
        description=(
            "host:port where clients outside the hub cluster (remote sites) reach the aggregator "
            "(a LoadBalancer, NodePort or TLS-passthrough Ingress); the server certificate covers host."
        ),
    )
    network_policy: bool = Field(
        default=True,
        description="A NetworkPolicy letting only the training's clients and the operator reach the "
        "gRPC port (metrics: the whole cluster); false for clients outside the cluster.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AggregatorSettings:
        if self.metrics_port == self.port:
            raise ValueError(
                f"metricsPort {self.metrics_port} is also the gRPC port; give them different ports"
            )
        for mount in self.pod_template.spec.volume_mounts:
            if self.model_volume_claim and _overlaps(mount["mountPath"], self.model_mount_path):
                raise ValueError(
                    f"podTemplate.spec.volumeMounts: {mount['mountPath']} overlaps modelMountPath "
                    f"{self.model_mount_path}, where the operator mounts modelVolumeClaim"
                )
        return self
