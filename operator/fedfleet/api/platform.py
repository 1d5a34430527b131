"""ClusterPodTemplate: the platform team's defaults for every pod the hub's operator creates (as
Kubeflow Trainer's ClusterTrainingRuntime), set once instead of in every training.

One cluster-scoped object, named `default`. Layers, lowest first: this default, the training's
own `spec.client` / `spec.aggregator` (each field it sets wins), then for client pods the
FederationSite (node placement, GPUs, data, labels), and over all of them what the operator
owns (`controller/resources.py` `with_template`). docs/install.md has the table.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, ValidationError

from fedfleet.api.base import SpecModel
from fedfleet.api.pods import (
    PodSecurity,
    PodSettings,
    PodTemplate,
    PodTemplateMetadata,
    PodTemplateSpec,
    Resources,
)
from fedfleet.api.training import FederatedTraining

PLATFORM_NAME = "default"  # the only ClusterPodTemplate the operator reads (the CRD refuses others)
Settings = TypeVar("Settings", bound=PodSettings)


class PlatformPodSettings(SpecModel):
    """What a platform sets for one kind of pod: placement, resources and a pod template."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    pod_template: PodTemplate = Field(default_factory=PodTemplate)


class ClusterPodTemplateSpec(SpecModel):
    """Defaults for the client pods (in every site namespace of this cluster) and for the
    aggregator and release pods; a training's own settings override them field by field."""

    client: PlatformPodSettings = Field(default_factory=PlatformPodSettings)
    aggregator: PlatformPodSettings = Field(default_factory=PlatformPodSettings)


class InvalidPlatform(ValueError):
    """The default and a training's settings do not make a valid pod (named in the message)."""


def _by_key(base: list[dict[str, Any]], own: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The platform's entries the training does not replace (same `key`), then the training's."""
    replaced = {item.get(key) for item in own}
    return [*(item for item in base if item.get(key) not in replaced), *own]


def _union(base: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [*own, *(item for item in base if item not in own)]


def layered_template(base: PodTemplate, own: PodTemplate) -> PodTemplate:
    """`own` over `base`: maps merged key by key, lists merged by name (pull secrets, env,
    volumes) or mount path, single values (priority class, service account, affinity, topology
    spread) replaced when `own` sets them, security context field by field."""
    b, o = base.spec, own.spec
    security = b.security_context.model_dump(exclude_defaults=True) | o.security_context.model_dump(
        exclude_defaults=True
    )
    return PodTemplate(
        metadata=PodTemplateMetadata(
            labels=base.metadata.labels | own.metadata.labels,
            annotations=base.metadata.annotations | own.metadata.annotations,
        ),
        spec=PodTemplateSpec(
            image_pull_secrets=[
                *o.image_pull_secrets,
                *(ref for ref in b.image_pull_secrets if ref not in o.image_pull_secrets),
            ],
            priority_class_name=o.priority_class_name or b.priority_class_name,
            service_account_name=o.service_account_name or b.service_account_name,
            affinity=o.affinity or b.affinity,
            topology_spread_constraints=o.topology_spread_constraints or b.topology_spread_constraints,
            env=_by_key(b.env, o.env, "name"),
            volumes=_by_key(b.volumes, o.volumes, "name"),
            volume_mounts=_by_key(b.volume_mounts, o.volume_mounts, "mountPath"),
            security_context=PodSecurity(**security),
        ),
    )


def layered(base: PlatformPodSettings, own: Settings) -> Settings:
    """A training's pod settings over the platform's (both already valid on their own)."""
    resources = Resources(
        requests=base.resources.requests | own.resources.requests,
        limits=base.resources.limits | own.resources.limits,
    )
    fields = dict(own) | {
        "node_selector": base.node_selector | own.node_selector,
        "tolerations": _union(base.tolerations, own.tolerations),
        "resources": resources,
        "pod_template": layered_template(base.pod_template, own.pod_template),
    }
    return type(own).model_validate(fields)  # the merged pod checked again (mount paths, volumes)


def with_platform(training: FederatedTraining, platform: ClusterPodTemplateSpec | None) -> FederatedTraining:
    """The training as its pods are built: its client and aggregator settings over the
    platform's. Only pods read this; the manifest the pods mount stays the training's own."""
    if platform is None:
        return training
    spec = training.spec
    try:
        client = layered(platform.client, spec.client)
        aggregator = layered(platform.aggregator, spec.aggregator)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise InvalidPlatform(
            f"ClusterPodTemplate {PLATFORM_NAME} with this training's pod settings: "
            f"{where + ': ' if where else ''}{problem['msg'].removeprefix('Value error, ')}"
        ) from None
    merged = spec.model_copy(update={"client": client, "aggregator": aggregator})
    return training.model_copy(update={"spec": merged})
