"""What a site install means for the pods the operator starts there: the rendered FederationSite,
read by the operator's own model, places client pods as asked, and the NetworkPolicy, Role,
quota and queue fit those pods."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
import yaml
from fedfleet.api import parse_training
from fedfleet.api.site import FederationSiteSpec
from fedfleet.controller import resources as res
from fedfleet.sites.policy import AgentConfig

from tests.charts.render import HUB, SITE, Object, load_values, of_kind, render, render_files

SPEC = parse_training(
    {
        "apiVersion": "fedfleet.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": "digits"},
        "spec": {"task": {"name": "digits-mlp"}, "rounds": 1, "sites": {"names": ["lab-gpu"]}},
    }
).spec
REF = res.TrainingRef("digits", "default", "uid-1")


def client_pod_for(objs: list[Object], namespace: str = "site-a") -> Object:
    """The client pod the operator would start for this FederationSite."""
    site = of_kind(objs, "FederationSite")[0]
    spec = FederationSiteSpec.model_validate(site["spec"])
    ref = res.SiteRef(site["metadata"]["name"], spec.namespace or namespace, spec)
    return res.client_pod(REF, SPEC, ref, 0, 0, "digits-aggregator.default.svc:50051", 1)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def gpu_site() -> list[Object]:
    return render(SITE, load_values(SITE / "ci" / "gpu-quota-kueue.yaml"))


def test_a_gpu_site_places_its_client_pods_on_gpu_nodes_through_kueue() -> None:
    objs = gpu_site()
    pod = client_pod_for(objs)
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    labels = pod["metadata"]["labels"]
    queue = of_kind(objs, "LocalQueue")[0]
    assert labels["kueue.x-k8s.io/queue-name"] == queue["metadata"]["name"] == "site-a"
    assert queue["spec"] == {"clusterQueue": "gpu-cluster-queue"}
    assert labels["team"] == "imaging" and labels["app.kubernetes.io/component"] == "client"
    claim = of_kind(objs, "PersistentVolumeClaim")[0]
    assert {
        "name": "data",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True},
    } in (pod["spec"]["volumes"])
    assert (
        claim["spec"]["accessModes"] == ["ReadOnlyMany"] and claim["spec"]["storageClassName"] == "fast-rwx"
    )


def test_the_quota_caps_pods_at_capacity_and_gpus_at_capacity_times_count() -> None:
    quota = of_kind(gpu_site(), "ResourceQuota")[0]
    assert quota["spec"]["hard"] == {"pods": "4", "requests.nvidia.com/gpu": "8", "requests.memory": "256Gi"}


def test_a_site_with_an_existing_claim_creates_none_and_mounts_that_one() -> None:
    objs = render(SITE, load_values(SITE / "ci" / "existing-claim.yaml"))
    assert of_kind(objs, "PersistentVolumeClaim") == []
    pod = client_pod_for(objs)
    assert pod["metadata"]["name"] == "digits-hospital-b-0"
    assert "--data-dir" in pod["spec"]["containers"][0]["args"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "records-2024", "readOnly": True}} in (
        pod["spec"]["volumes"]
    )


def test_client_pods_may_reach_only_the_aggregator_and_dns() -> None:
    policy = of_kind(render(SITE), "NetworkPolicy")[0]["spec"]
    pod = client_pod_for(render(SITE))
    assert selects(policy["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["ingress"] == []  # nothing connects in
    dns, aggregator = policy["egress"]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    agg_pod = res.aggregator_pod(REF, SPEC)
    peer = aggregator["to"][0]
    assert selects(peer["podSelector"]["matchLabels"], agg_pod["metadata"]["labels"])
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": REF.namespace}
    assert aggregator["ports"] == [{"protocol": "TCP", "port": SPEC.aggregator.port}]
    # nor may the aggregator selector match the client pods themselves (or anything else the site runs)
    assert not selects(peer["podSelector"]["matchLabels"], pod["metadata"]["labels"])


def test_the_site_role_lets_the_hub_operator_run_pods_here_and_nothing_else() -> None:
    objs = render(SITE, load_values(SITE / "ci" / "no-data-no-policy.yaml"))
    role, binding = of_kind(objs, "Role")[0], of_kind(objs, "RoleBinding")[0]
    assert {(tuple(r["apiGroups"]), tuple(r["resources"])) for r in role["rules"]} == {
        (("",), ("pods",)),
        (("",), ("configmaps",)),  # the training's manifest, mounted by the client pods
        (("",), ("secrets",)),  # each client's certificate, mounted too
        (("",), ("persistentvolumeclaims",)),  # read only: READY needs the site's data claim to exist
    }
    claims = next(r for r in role["rules"] if r["resources"] == ["persistentvolumeclaims"])
    assert claims["verbs"] == ["get"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fedfleet-hub", "namespace": "platform"}
    ]
    assert of_kind(objs, "NetworkPolicy") == [] and of_kind(objs, "PersistentVolumeClaim") == []


def test_the_site_role_binds_the_service_account_the_hub_chart_creates() -> None:
    account = of_kind(render(HUB), "ServiceAccount")[0]["metadata"]
    binding = of_kind(render(SITE), "RoleBinding")[0]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_kueue_without_a_cluster_queue_is_refused_by_name() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"kueue\.clusterQueue: required"):
        render_files(SITE, {"kueue": {"enabled": True}})


def test_a_site_with_no_gpu_trains_on_cpu() -> None:
    pod = client_pod_for(render(SITE))
    resources: dict[str, Any] = pod["spec"]["containers"][0]["resources"]
    assert not any("gpu" in key for kind in resources.values() for key in kind)
    assert "kueue.x-k8s.io/queue-name" not in pod["metadata"]["labels"]


def remote_site() -> list[Object]:
    return render(SITE, load_values(SITE / "ci" / "remote.yaml"))


def test_a_remote_site_runs_its_agent_with_rights_in_its_own_namespace_and_none_for_the_hub() -> None:
    objs = remote_site()
    assert of_kind(objs, "FederationSite") == []  # the hub admin creates it at the hub
    roles = of_kind(objs, "Role") + of_kind(objs, "ClusterRole")
    assert [r["metadata"]["name"] for r in roles] == ["site-a-agent"]
    assert all(r["metadata"]["namespace"] == "site-a" for r in roles)
    granted = {(v, res_) for rule in roles[0]["rules"] for v in rule["verbs"] for res_ in rule["resources"]}
    assert {r for _, r in granted} == {"pods", "configmaps", "secrets"}
    bindings = of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding")
    subjects = [s for b in bindings for s in b["subjects"]]
    assert subjects == [{"kind": "ServiceAccount", "name": "site-a-agent", "namespace": "site-a"}]
    deployment = of_kind(objs, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "site-a-agent"
    assert pod["containers"][0]["args"][:3] == ["site-agent", "--config", "/etc/fedfleet/agent.yaml"]


def test_the_remote_sites_values_are_the_agents_config_and_decide_placement() -> None:
    config_map = next(
        o for o in of_kind(remote_site(), "ConfigMap") if o["metadata"]["name"] == "site-a-agent"
    )
    config = AgentConfig.model_validate(yaml.safe_load(config_map["data"]["agent.yaml"]))
    assert (config.site, config.namespace, config.hub.address) == ("site-a", "site-a", "hub.example.org:7443")
    assert config.policy.allowed_registries == ["ghcr.io/fedfleet"] and config.policy.max_gpus == 2
    site = config.site_ref()
    pod = res.client_pod(REF, SPEC, site, 0, 0, "hub.example.org:50051", 1)
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["metadata"]["namespace"] == "site-a"
