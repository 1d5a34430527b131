"""The site's side of sovereignty: the agent's configuration (the site chart's values), and
the check every piece of work passes before anything starts at the site.

What the hub may ask is a training's manifest and how many of the site's clients to run; the
site decides the rest (placement, GPUs, data claim) and refuses, with a reason the hub shows,
an image, a base model or a load its policy does not allow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from fedfleet.api.base import SpecModel
from fedfleet.api.site import FederationSiteSpec, GpuSpec, SitePolicy
from fedfleet.api.training import FederatedTrainingSpec
from fedfleet.controller import resources as res
from fedfleet.provenance.policy import PolicyRefusal, check_base_model


class HubSettings(SpecModel):
    address: str = Field(min_length=3, max_length=253, description="host:port of the hub's site gateway.")
    enrol_address: str = Field(
        default="", max_length=253, description="host:port of its enrolment port; empty: address's port + 1."
    )
    ca_certificate: str = Field(min_length=1, description="The gateway CA's PEM (public; from join-token).")
    ca_fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of that CA: a pasted CA other than the hub admin's is refused.",
    )
    server_name: str = Field(
        default="fedfleet-site-gateway", description="Name the gateway's certificate must carry."
    )

    def enrolment(self) -> str:
        if self.enrol_address:
            return self.enrol_address
        host, port = self.address.rsplit(":", 1)
        return f"{host}:{int(port) + 1}"


class Placement(SpecModel):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    data_volume_claim: str = ""
    pod_labels: dict[str, str] = Field(default_factory=dict)


class WorkPolicy(SpecModel):
    allowed_registries: list[str] = Field(
        default_factory=list, description="Image prefixes (registry/repository) allowed; empty: any."
    )
    allowed_image_digests: list[str] = Field(
        default_factory=list, description="sha256:... digests an image must be pinned to; empty: any."
    )
    allowed_base_digests: list[str] = Field(default_factory=list, description="Base models; empty: any.")
    max_clients: int = Field(default=4, ge=0, le=1000, description="Client pods at once, all trainings.")
    max_gpus: int = Field(default=0, ge=0, le=4096, description="GPUs at once, all trainings.")


class AgentConfig(SpecModel):
    site: str = Field(min_length=1, max_length=253, description="The FederationSite's name at the hub.")
    namespace: str = Field(
        min_length=1, max_length=63, description="Where the client pods run (this cluster)."
    )
    hub: HubSettings
    token_file: str = Field(default="/var/run/fedfleet/join/token", description="The one-time join token.")
    identity_secret: str = Field(
        default="fedfleet-site-agent-identity", description="The agent's key and certificate."
    )
    policy: WorkPolicy = Field(default_factory=WorkPolicy)
    placement: Placement = Field(default_factory=Placement)
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=60)
    resync_seconds: float = Field(default=2.0, gt=0, le=60, description="Pods re-read at least this often.")
    give_up_seconds: float = Field(default=86400.0, gt=0, description="Reconnecting stops after this long.")

    def site_ref(self) -> res.SiteRef:
        """The site as the shared pod builder sees it: the site's own placement and policy."""
        spec = FederationSiteSpec(
            namespace=self.namespace,
            node_selector=self.placement.node_selector,
            tolerations=self.placement.tolerations,
            gpu=self.placement.gpu,
            data_volume_claim=self.placement.data_volume_claim,
            pod_labels=self.placement.pod_labels,
            capacity=max(1, self.policy.max_clients),
            policy=SitePolicy(allowed_base_digests=self.policy.allowed_base_digests),
        )
        return res.SiteRef(self.site, self.namespace, spec)


class ConfigError(ValueError):
    pass


def load_config(path: Path) -> AgentConfig:
    try:
        raw = yaml.safe_load(path.read_text())
        return AgentConfig.model_validate(raw)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from None
    except ValidationError as err:
        raise ConfigError(f"{path}: {err}") from None


def refusal(policy: WorkPolicy, spec: FederatedTrainingSpec) -> str | None:
    """Why the site's policy refuses a training's work, or None. Nothing starts when refused."""
    image = spec.client.container_image
    if policy.allowed_registries and not any(
        image.startswith(p.rstrip("/") + "/") for p in policy.allowed_registries
    ):
        return f"site policy allowedRegistries: image {image[:200]} is not from an allowed registry"
    if policy.allowed_image_digests and image.rsplit("@", 1)[-1] not in policy.allowed_image_digests:
        return f"site policy allowedImageDigests: image {image[:200]} is not pinned to an allowed digest"
    try:
        check_base_model(spec, policy.allowed_base_digests)
    except PolicyRefusal as err:
        return str(err)
    template = spec.client.pod_template.spec
    if template.volumes or template.volume_mounts:
        return "site policy: the site decides its pods' volumes; spec.client.podTemplate may add none"
    if template.service_account_name:
        return "site policy: client pods run without a ServiceAccount of the hub's choosing"
    return None


def gpus_of(placement: Placement) -> int:
    return placement.gpu.count
