"""The platform's ClusterPodTemplate under a training's pod settings, under the site's placement,
under what the operator owns: each layer's field wins over the layers below it (pure: the pods
the operator would create; tests/controller/test_pod_templates.py shows it through both lanes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fedfleet.api import parse_training
from fedfleet.api.site import FederationSiteSpec
from fedfleet.controller import resources as res
from fedfleet.controller.spec_checks import InvalidSpec, with_platform_defaults

pytestmark = pytest.mark.unit

REF = res.TrainingRef("digits", "hub", "uid-1")
PLATFORM: dict[str, Any] = {
    "client": {
        "nodeSelector": {"pool": "cpu", "zone": "a"},
        "tolerations": [{"key": "spot", "operator": "Exists"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "podTemplate": {
            "metadata": {"labels": {"team": "platform", "cost": "shared"}},
            "spec": {
                "imagePullSecrets": [{"name": "mirror"}],
                "priorityClassName": "fl-low",
                "serviceAccountName": "platform-sa",
                "env": [
                    {"name": "HTTPS_PROXY", "value": "http://platform:3128"},
                    {"name": "NO_PROXY", "value": ".svc"},
                ],
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                "securityContext": {"runAsUser": 3000, "fsGroup": 3000, "supplementalGroups": [7000]},
            },
        },
    },
    "aggregator": {
        "nodeSelector": {"pool": "system"},
        "podTemplate": {"spec": {"priorityClassName": "fl-high"}},
    },
}
TRAINING_CLIENT: dict[str, Any] = {
    "nodeSelector": {"zone": "b"},
    "resources": {"requests": {"cpu": "2"}},
    "podTemplate": {
        "metadata": {"labels": {"team": "vision"}},
        "spec": {
            "imagePullSecrets": [{"name": "regcred"}],
            "priorityClassName": "fl-batch",
            "env": [{"name": "HTTPS_PROXY", "value": "http://team:3128"}],
            "securityContext": {"supplementalGroups": [5000]},
        },
    },
}
SITE = res.SiteRef(
    "a",
    "site-a",
    FederationSiteSpec.model_validate(
        {"gpu": {"count": 1}, "nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "nvidia.com/gpu"}]}
    ),
)


def training(**spec: Any) -> Any:
    return parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "digits"},
            "spec": {"task": {"name": "digits-mlp"}, "rounds": 3, "sites": {"names": ["a", "b"]}} | spec,
        }
    )


def client_pod(platform: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    built = with_platform_defaults(training(**spec), platform)
    return res.client_pod(REF, built.spec, SITE, 0, 0, "agg:50051", 1)


def test_each_layer_wins_over_the_one_below_on_a_client_pod() -> None:
    pod = client_pod(PLATFORM, client=TRAINING_CLIENT)
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["nodeSelector"] == {"pool": "gpu", "zone": "b"}  # site > training > platform, key by key
    assert spec["tolerations"] == [{"key": "spot", "operator": "Exists"}, {"key": "nvidia.com/gpu"}]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": 1}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]  # both registries
    assert spec["priorityClassName"] == "fl-batch" and spec["serviceAccountName"] == "platform-sa"
    env = {v["name"]: v["value"] for v in container["env"]}
    assert env["HTTPS_PROXY"] == "http://team:3128" and env["NO_PROXY"] == ".svc" and env["HOME"] == "/tmp"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert spec["securityContext"] | {"seccompProfile": None} == res.RESTRICTED_POD | {
        "runAsUser": 3000,
        "fsGroup": 3000,
        "supplementalGroups": [5000],
        "seccompProfile": None,
    }
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "vision" and labels["cost"] == "shared"
    assert labels["app.kubernetes.io/component"] == "client"  # the operator's own over every layer
    assert spec["automountServiceAccountToken"] is False  # the platform's service account, no token


def test_without_a_platform_default_or_with_an_empty_one_the_pods_are_the_trainings() -> None:
    assert client_pod(None, client=TRAINING_CLIENT) == client_pod({}, client=TRAINING_CLIENT)
    assert client_pod(PLATFORM) != client_pod(None)


def test_the_aggregator_and_release_pods_take_the_aggregator_defaults() -> None:
    built = with_platform_defaults(
        training(aggregator={"stateVolumeSize": "1Gi"}, release={"oci": {"reference": "r.example/m:v1"}}),
        PLATFORM,
    )
    for pod in (res.aggregator_pod(REF, built.spec), res.release_pod(REF, built.spec, 1)):
        assert pod["spec"]["nodeSelector"] == {"pool": "system"}
        assert pod["spec"]["priorityClassName"] == "fl-high"
        assert "imagePullSecrets" not in pod["spec"]  # the client defaults stay on client pods


def test_the_manifest_the_pods_read_stays_the_trainings_own() -> None:
    own = training(client=TRAINING_CLIENT)
    built = with_platform_defaults(own, PLATFORM)
    assert res.training_manifest(REF, own)["spec"]["client"]["nodeSelector"] == {"zone": "b"}
    assert built.spec.client.node_selector == {"pool": "cpu", "zone": "b"}


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        (
            {"client": {"podTemplate": {"spec": {"volumes": [{"name": "tls", "emptyDir": {}}]}}}},
            "ClusterPodTemplate default: spec.client.podTemplate.spec: volumes: tls is a volume "
            "the operator mounts; rename it",
        ),
        (
            {"client": {"nodeSelektor": {"pool": "cpu"}}},
            "ClusterPodTemplate default: spec.client.nodeSelektor: Extra inputs are not permitted",
        ),
        (  # valid alone, but the training's model volume is mounted where the platform mounts a cache
            {
                "aggregator": {
                    "podTemplate": {
                        "spec": {
                            "volumes": [{"name": "cache", "emptyDir": {}}],
                            "volumeMounts": [{"name": "cache", "mountPath": "/models/cache"}],
                        }
                    }
                }
            },
            "ClusterPodTemplate default with this training's pod settings: podTemplate.spec.volumeMounts: "
            "/models/cache overlaps modelMountPath /models",
        ),
    ],
    ids=["operator volume", "mistyped field", "clash with the training"],
)
def test_a_platform_default_that_cannot_make_a_pod_is_an_invalid_spec_naming_it(
    platform: dict[str, Any], message: str
) -> None:
    own = training(aggregator={"modelVolumeClaim": "base", "modelMountPath": "/models"})
    with pytest.raises(InvalidSpec) as caught:
        with_platform_defaults(own, platform)
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_example_is_a_default_the_operator_applies() -> None:
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "platform.yaml").read_text())
    assert example["kind"] == "ClusterPodTemplate" and example["metadata"]["name"] == "default"
    pod = client_pod(example["spec"], client=TRAINING_CLIENT)
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu", "zone": "b"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "registry-mirror"}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["spec"]["containers"][0]["volumeMounts"]
