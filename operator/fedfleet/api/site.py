"""FederationSite: where one site's clients run. Created by the per-site Helm chart."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedfleet.api.base import SpecModel


class GpuSpec(SpecModel):
    resource_name: str = Field(
        default="nvidia.com/gpu", description="Extended resource of the GPU device plugin."
    )
    count: int = Field(default=0, ge=0, le=64, description="GPUs per client pod; 0 trains on CPU.")


class SitePolicy(SpecModel):
    allowed_base_digests: list[str] = Field(
        default_factory=list, description="Base model digests this site agrees to train; empty: any."
    )


class FederationSiteSpec(SpecModel):
    """Placement and limits of one site's client pods."""

    namespace: str = Field(default="", description="Namespace of the client pods; empty: the site's own.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    data_volume_claim: str = Field(
        default="", description="PersistentVolumeClaim mounted at /data in client pods."
    )
    capacity: int = Field(default=1, ge=1, le=1000, description="Most client pods this site runs at once.")
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels on the site's client pods (e.g. kueue.x-k8s.io/queue-name); fedfleet's own win.",
    )
    policy: SitePolicy = Field(default_factory=SitePolicy)
    remote: bool = Field(
        default=False,
        description=(
            "The site runs in its own cluster: its agent dials the hub's site gateway and creates the "
            "client pods there (fedfleet site join-token NAME enrols it); namespace, placement and "
            "policy are then the site's own, set in its agent."
        ),
    )
    suspended: bool = Field(
        default=False, description="A remote site's stream is closed and it gets no work until cleared."
    )

    def allows(self, digest: str) -> bool:
        return not self.policy.allowed_base_digests or digest in self.policy.allowed_base_digests
