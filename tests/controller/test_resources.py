"""What the operator creates: deterministic names, labels, owners, placement and restricted pods."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fedfleet.api import parse_training
from fedfleet.api.load import ManifestError
from fedfleet.api.release import ReleaseSpec
from fedfleet.api.site import FederationSiteSpec
from fedfleet.controller import resources as res
from fedfleet.controller.spec_checks import InvalidSpec, resolve_sites

pytestmark = pytest.mark.unit

REF = res.TrainingRef("digits", "hub", "uid-1")
SPEC = parse_training(
    {
        "apiVersion": "fedfleet.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": "digits"},
        "spec": {
            "task": {"name": "digits-mlp"},
            "rounds": 3,
            "sites": {"names": ["a", "b"]},
            "clientsPerSite": 2,
            "client": {"resources": {"limits": {"memory": "2Gi"}}, "tolerations": [{"key": "spot"}]},
            "aggregator": {"port": 6000, "stateVolumeSize": "1Gi"},
        },
    }
).spec
GPU_SITE = res.SiteRef(
    "a",
    "site-a",
    FederationSiteSpec.model_validate(
        {
            "gpu": {"count": 2},
            "nodeSelector": {"gpu": "h100"},
            "dataVolumeClaim": "digits-data",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    ),
)
LOCAL_SITE = res.SiteRef("b", "hub", FederationSiteSpec())
RELEASING = SPEC.model_copy(
    update={
        "release": ReleaseSpec.model_validate(
            {"oci": {"reference": "registry.example/team/digits:v1", "credentialsSecret": "push"}}
        )
    }
)


def pods() -> list[dict[str, Any]]:
    return [
        res.aggregator_pod(REF, SPEC),
        res.client_pod(REF, SPEC, GPU_SITE, 1, 1, "agg:6000", 1),
        res.client_pod(REF, SPEC, LOCAL_SITE, 0, 2, "agg:6000", 3),
        res.release_pod(REF, RELEASING, 1),
    ]


@pytest.mark.parametrize("pod", pods(), ids=lambda p: p["metadata"]["name"])
def test_every_pod_is_restricted(pod: dict[str, Any]) -> None:
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["spec"]["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # writable scratch


def test_names_and_labels_are_deterministic() -> None:
    client = res.client_pod(REF, SPEC, GPU_SITE, 1, 1, "agg:6000", 1)
    assert client == res.client_pod(REF, SPEC, GPU_SITE, 1, 1, "agg:6000", 1)
    assert client["metadata"]["name"] == "digits-a-1"
    assert client["metadata"]["labels"] | {} == {
        "app.kubernetes.io/name": "fedfleet",
        "app.kubernetes.io/component": "client",
        "app.kubernetes.io/instance": "digits",
        "app.kubernetes.io/managed-by": "fedfleet-operator",
        "fedfleet.io/training": "digits",
        "fedfleet.io/site": "a",
        "fedfleet.io/client": "a-1",
    }
    assert res.round_name("digits", 7, "train") == "digits-r0007"
    assert res.round_name("digits", 3, "evaluate") == "digits-eval"


def test_client_pods_follow_their_site() -> None:
    pod = res.client_pod(REF, SPEC, GPU_SITE, 1, 1, "agg:6000", 1)
    container = pod["spec"]["containers"][0]
    assert pod["metadata"]["namespace"] == "site-a"
    assert "ownerReferences" not in pod["metadata"], "no cross-namespace owners; the finalizer cleans up"
    assert container["resources"] == {
        "limits": {"memory": "2Gi", "nvidia.com/gpu": 2},
        "requests": {"nvidia.com/gpu": 2},
    }
    assert pod["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert pod["spec"]["tolerations"] == [{"key": "spot"}, GPU_SITE.spec.tolerations[0]]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "digits-data", "readOnly": True}} in (
        pod["spec"]["volumes"]
    )
    args = container["args"]
    assert args[args.index("--client-id") + 1] == "a-1" and args[args.index("--data-dir") + 1] == "/data"
    assert args[args.index("--num-partitions") + 1] == "4"
    local = res.client_pod(REF, SPEC, LOCAL_SITE, 0, 2, "agg:6000", 3)
    assert local["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert local["metadata"]["annotations"]["fedfleet.io/attempt"] == "3"


def test_aggregator_service_and_state_claim() -> None:
    service = res.aggregator_service(REF, SPEC)
    assert service["spec"]["ports"][0]["port"] == 6000
    pod = res.aggregator_pod(REF, SPEC)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    claim = res.state_claim(REF, SPEC)
    assert claim is not None and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert {"name": "state", "persistentVolumeClaim": {"claimName": "digits-state"}} in pod["spec"]["volumes"]
    assert "model" not in {v["name"] for v in pod["spec"]["volumes"]}


def test_the_state_claim_and_lineage_key_outlive_the_training_unless_retention_says_delete() -> None:
    claim = res.state_claim(REF, SPEC)
    assert claim is not None and "ownerReferences" not in claim["metadata"]  # not garbage-collected
    assert claim["metadata"]["labels"][res.RETAIN_LABEL] == "true"


def test_the_release_pod_reads_the_state_read_only_and_alone_holds_the_registry_credentials() -> None:
    pod = res.release_pod(REF, RELEASING, 2)
    container = pod["spec"]["containers"][0]
    assert container["args"][:5] == [
        "model",
        "release",
        "/var/lib/fedfleet",
        "--to",
        "registry.example/team/digits:v1",
    ]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "digits-state", "readOnly": True}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert all(mounts[n]["readOnly"] for n in ("state", "lineage", "registry", "manifest"))
    assert volumes["registry"]["secret"]["items"] == [
        {"key": ".dockerconfigjson", "path": ".docker/config.json"}
    ]
    assert {"name": "HOME", "value": mounts["registry"]["mountPath"]} in container[
        "env"
    ]  # oras reads it there
    assert pod["metadata"]["annotations"]["fedfleet.io/attempt"] == "2"
    assert pod["spec"]["restartPolicy"] == "Never"  # the operator retries, a bounded number of times
    others = [res.aggregator_pod(REF, RELEASING), res.client_pod(REF, RELEASING, LOCAL_SITE, 0, 0, "a:1", 1)]
    assert not any("registry" in {v["name"] for v in p["spec"]["volumes"]} for p in others)


def test_the_aggregator_mounts_a_base_model_claim_read_only_where_the_source_points() -> None:
    spec = SPEC.model_copy(
        update={"aggregator": SPEC.aggregator.model_copy(update={"model_volume_claim": "base-models"})}
    )
    pod = res.aggregator_pod(REF, spec)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "base-models", "readOnly": True}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/data", "readOnly": True}


def test_each_pod_mounts_only_its_own_certificate_read_only_and_is_told_where_it_is() -> None:
    aggregator = res.aggregator_pod(REF, SPEC)
    container = aggregator["spec"]["containers"][0]
    volumes = {v["name"]: v for v in aggregator["spec"]["volumes"]}
    assert volumes["tls"]["secret"] == {"secretName": "digits-aggregator-tls", "defaultMode": 0o440}
    assert volumes["lineage"]["secret"]["secretName"] == "digits-lineage-key"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/var/run/fedfleet/tls", "readOnly": True}
    assert mounts["lineage"]["mountPath"] == "/var/run/fedfleet/lineage" and mounts["lineage"]["readOnly"]
    args = " ".join(container["args"])
    assert "--tls-cert /var/run/fedfleet/tls/tls.crt --tls-key /var/run/fedfleet/tls/tls.key" in args
    assert "--tls-ca /var/run/fedfleet/tls/ca.crt" in args and "--insecure-local" not in args
    assert "--lineage-key /var/run/fedfleet/lineage/ed25519.pem" in args
    assert container["readinessProbe"]["tcpSocket"] == {"port": 6000}  # a grpc probe cannot do mTLS

    client = res.client_pod(REF, SPEC, GPU_SITE, 1, 1, "digits-aggregator.hub.svc:6000", 1)
    secrets = [v["secret"]["secretName"] for v in client["spec"]["volumes"] if "secret" in v]
    assert secrets == ["digits-a-1-tls"]
    args = " ".join(client["spec"]["containers"][0]["args"])
    assert "--tls-ca /var/run/fedfleet/tls/ca.crt --tls-server-name digits-aggregator.hub.svc" in args


def test_the_aggregator_serves_metrics_where_prometheus_looks() -> None:
    pod = res.aggregator_pod(REF, SPEC)
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--metrics-port") + 1] == "9090"
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }
    service = res.aggregator_service(REF, SPEC)
    assert {"name": "metrics", "port": 9090, "targetPort": 9090, "appProtocol": "http"} in service["spec"][
        "ports"
    ]


def test_the_metrics_port_cannot_be_the_grpc_port() -> None:
    with pytest.raises(ValueError, match="metricsPort 6000 is also the gRPC port"):
        SPEC.aggregator.model_validate({"port": 6000, "metricsPort": 6000})


def with_templates(client: dict[str, Any] | None = None, aggregator: dict[str, Any] | None = None) -> Any:
    body = SPEC.model_dump(by_alias=True, mode="json")
    if client is not None:
        body["client"]["podTemplate"] = client
    if aggregator is not None:
        body["aggregator"]["podTemplate"] = aggregator
    return parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "digits"},
            "spec": body,
        }
    ).spec


def test_without_a_template_no_pod_mounts_a_service_account_token_and_nothing_empty_is_added() -> None:
    for pod in pods():
        assert pod["spec"]["automountServiceAccountToken"] is False
        for key in ("imagePullSecrets", "priorityClassName", "serviceAccountName", "affinity"):
            assert key not in pod["spec"]
        assert pod["spec"]["securityContext"] == res.RESTRICTED_POD


def test_a_template_may_run_the_pods_as_another_non_root_user_and_name_a_service_account() -> None:
    spec = with_templates(
        client={
            "spec": {
                "serviceAccountName": "site-reader",
                "securityContext": {"runAsUser": 2000, "fsGroup": 3000},
            }
        }
    )
    pod = res.client_pod(REF, spec, LOCAL_SITE, 0, 2, "agg:6000", 1)
    assert pod["spec"]["serviceAccountName"] == "site-reader"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["securityContext"] == res.RESTRICTED_POD | {"runAsUser": 2000, "fsGroup": 3000}
    assert "serviceAccountName" not in res.aggregator_pod(REF, spec)["spec"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"volumes": [{"name": "tmp", "emptyDir": {}}]}, "tmp is a volume the operator mounts"),
        (
            {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/var/run"}],
            },
            "/var/run overlaps /var/run/fedfleet",
        ),
        (
            {"volumeMounts": [{"name": "nope", "mountPath": "/dev/shm"}]},
            "'nope' is not one of the template's volumes",
        ),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env: A given more than once"),
        ({"securityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"hostNetwork": True}, "hostNetwork"),
    ],
)
def test_a_template_cannot_take_what_the_operator_owns(template: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        with_templates(client={"spec": template})


def test_the_network_policy_can_be_left_out_for_clients_outside_the_cluster() -> None:
    assert res.aggregator_network_policy(REF, SPEC) is not None
    spec = SPEC.model_copy(
        update={"aggregator": SPEC.aggregator.model_copy(update={"network_policy": False})}
    )
    assert res.aggregator_network_policy(REF, spec) is None


def test_a_release_without_a_state_volume_is_an_invalid_spec() -> None:
    sites = [{"metadata": {"name": n, "namespace": "hub"}, "spec": {"capacity": 2}} for n in ("a", "b")]
    no_volume = RELEASING.model_copy(
        update={"aggregator": RELEASING.aggregator.model_copy(update={"state_volume_size": ""})}
    )
    training = parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "digits"},
            "spec": no_volume.model_dump(by_alias=True, mode="json"),
        }
    )
    with pytest.raises(InvalidSpec, match=r"spec.release.oci: .* set spec.aggregator.stateVolumeSize"):
        resolve_sites(training, sites)
    assert resolve_sites(training.model_copy(update={"spec": RELEASING}), sites)
