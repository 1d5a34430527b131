"""Pod templates in both lanes: what the platform's ClusterPodTemplate and a training's
spec.client.podTemplate and spec.aggregator.podTemplate add reaches the pods the operator
creates, the training's own settings over the platform's and the site's placement over both,
and what the protocol needs stays the operator's."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.controller.cluster import Cluster, site, start_operator, training_manifest, wait_for
from tests.kube.fixtures import real_lane_of, start_kubelet

GROUP, VERSION, PLATFORMS = "fedfleet.io", "v1alpha1", "clusterpodtemplates"


def platform(name: str) -> dict[str, Any]:
    """The platform team's defaults: the CPU pool, a registry mirror, a proxy, a uid, memory."""
    pod_spec = {"imagePullSecrets": [{"name": "platform-mirror"}], "priorityClassName": "fl-low"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterPodTemplate",
        "metadata": {"name": name},
        "spec": {
            "client": {
                "nodeSelector": {"fedfleet.test/pool": "cpu"},
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "podTemplate": {
                    "spec": pod_spec
                    | {
                        "env": [
                            {"name": "HTTPS_PROXY", "value": "http://platform:3128"},
                            {"name": "NO_PROXY", "value": ".svc"},
                        ],
                        "securityContext": {"runAsUser": 3000, "supplementalGroups": [7000]},
                    }
                },
            },
            "aggregator": {"nodeSelector": {"fedfleet.test/pool": "cpu"}, "podTemplate": {"spec": pod_spec}},
        },
    }


SHM: dict[str, Any] = {
    "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
}


def test_a_pod_template_reaches_the_pods_and_the_operator_keeps_what_it_owns(
    kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cluster = Cluster(kubeconfig)
    priorities = client.SchedulingV1Api(cluster.api)
    for name in ("fl-batch", "fl-critical"):  # a real API server admits no pod naming a missing one
        with contextlib.suppress(ApiException):  # created by an earlier run of the lane, or no such API
            priorities.create_priority_class({"metadata": {"name": name}, "value": 1000})
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    # an integer GPU quantity, as users write it; the real lane's GPU node is tainted, and the
    # site's own placement (the GPU pool) wins over the platform's CPU pool
    gpu_pool = {"fedfleet.test/pool": "gpu"}
    cluster.apply(site("site-a", gpu={"count": 1}, tolerations=[gpu_toleration], nodeSelector=gpu_pool))
    cluster.apply(site("site-b"))
    with pytest.raises(ApiException) as misnamed:  # the operator reads only the one named default
        cluster.custom.create_cluster_custom_object(GROUP, VERSION, PLATFORMS, platform("gpu-team"))
    assert misnamed.value.status == 422 and "named default" in str(misnamed.value.body)
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, PLATFORMS, platform("default"))
    # the real lane is shared by the session's tests: whatever happens, later ones get no default
    request.addfinalizer(
        lambda: cluster.custom.delete_cluster_custom_object(GROUP, VERSION, PLATFORMS, "default")
    )
    manifest = training_manifest("tpl", 5600, ["site-a", "site-b"], secureAggregation={"enabled": False})
    manifest["spec"]["client"] = {
        "resources": {"requests": {"cpu": "200m"}},
        "podTemplate": {
            "metadata": {
                "labels": {"team": "vision", "app.kubernetes.io/component": "mine"},
                "annotations": {"cost-center": "42"},
            },
            "spec": {
                "imagePullSecrets": [{"name": "regcred"}],
                "priorityClassName": "fl-batch",
                "env": [
                    {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                    {"name": "HOME", "value": "/root"},
                ],
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                    }
                ],
                "securityContext": {"supplementalGroups": [5000]},
                **SHM,
            },
        },
    }
    manifest["spec"]["aggregator"]["podTemplate"] = {
        "spec": {"imagePullSecrets": [{"name": "regcred"}], "priorityClassName": "fl-critical", **SHM}
    }
    cluster.apply(manifest)
    kubelet = start_kubelet(kubeconfig, tmp_path / "kubelet", phase_only=True)
    operator = start_operator(kubeconfig, tmp_path / "operator.log")
    try:

        def pods() -> dict[str, dict[str, Any]]:
            found = cluster.items("Pod", selector="fedfleet.io/training=tpl")
            return {
                p["metadata"]["name"]: p for p in found if (p.get("status") or {}).get("phase") == "Running"
            }

        running = wait_for(lambda: len(pods()) == 3 and pods(), 120, "three pods running")
    finally:
        operator.terminate()
        operator.wait(15)
        kubelet.stop()
    assert sorted(running) == ["tpl-aggregator", "tpl-site-a-0", "tpl-site-b-0"]
    for pod in running.values():
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "platform-mirror"}]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in spec["volumes"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert spec["automountServiceAccountToken"] is False  # no fedfleet pod but the operator calls the API
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    aggregator = running["tpl-aggregator"]
    assert aggregator["spec"]["priorityClassName"] == "fl-critical"
    assert aggregator["spec"]["nodeSelector"] == {"fedfleet.test/pool": "cpu"}  # the platform's
    assert running["tpl-site-b-0"]["spec"]["nodeSelector"] == {"fedfleet.test/pool": "cpu"}
    assert running["tpl-site-a-0"]["spec"]["nodeSelector"] == gpu_pool  # the site's wins
    if real_lane_of(kubeconfig) is not None:  # the real scheduler placed them so
        assert running["tpl-site-a-0"]["spec"]["nodeName"] == "node-gpu-0"
        assert running["tpl-site-b-0"]["spec"]["nodeName"].startswith("node-cpu-")
    probe = aggregator["spec"]["containers"][0]["livenessProbe"]["httpGet"]
    probe.pop("scheme", None)  # a real API server defaults it to HTTP
    assert probe == {"path": "/metrics", "port": "metrics"}
    gpu_client = running["tpl-site-a-0"]
    assert gpu_client["spec"]["priorityClassName"] == "fl-batch"
    resources = gpu_client["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1"}
    # the training's cpu over the platform's, the platform's memory kept, the site's GPU
    assert resources["requests"] == {"cpu": "200m", "memory": "64Mi", "nvidia.com/gpu": "1"}
    labels = gpu_client["metadata"]["labels"]
    assert (
        labels["team"] == "vision" and labels["app.kubernetes.io/component"] == "client"
    )  # the operator's wins
    assert gpu_client["metadata"]["annotations"]["cost-center"] == "42"
    security = gpu_client["spec"]["securityContext"]
    assert security["supplementalGroups"] == [5000] and security["runAsUser"] == 3000  # training, platform
    assert gpu_client["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    env = {v["name"]: v.get("value") for v in gpu_client["spec"]["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy:3128" and env["HOME"] == "/tmp"  # the operator's HOME wins
    assert env["NO_PROXY"] == ".svc"  # the platform's, which the training did not set

    policy = cluster.api.sanitize_for_serialization(
        client.NetworkingV1Api(cluster.api).read_namespaced_network_policy("tpl-aggregator", "default")
    )
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= aggregator["metadata"]["labels"].items()
    grpc_rule = policy["spec"]["ingress"][0]
    assert grpc_rule["ports"] == [{"protocol": "TCP", "port": 5600}]
    assert {
        "namespaceSelector": {},
        "podSelector": {
            "matchLabels": {"fedfleet.io/training": "tpl", "app.kubernetes.io/component": "client"}
        },
    } in grpc_rule["from"]
