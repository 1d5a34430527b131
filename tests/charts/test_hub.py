"""The hub chart's operator Deployment: flags the real CLI accepts, peering only with replicas > 1,
RBAC split by the namespaces watched, and Services, monitors and budgets that select its pods."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest
from fedfleet.api import parse_training
from fedfleet.cli import build_parser
from fedfleet.controller import resources as res
from fedfleet.controller.settings import OperatorSettings

from tests.charts.render import HUB, Object, load_values, of_kind, render, variant_id, variants

RBAC_KINDS = ("ClusterRole", "Role")


def operator(objs: list[Object]) -> Object:
    return of_kind(objs, "Deployment")[0]["spec"]["template"]


def rules(obj: Object) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("variant", [v for v in variants() if v[0] == HUB], ids=variant_id)
def test_the_operator_is_started_with_flags_the_cli_accepts(variant: tuple[Path, Path | None]) -> None:
    values = load_values(variant[1]) or {}
    container = operator(render(HUB, values))["spec"]["containers"][0]
    assert "command" not in container  # the image's ENTRYPOINT, `fedfleet`, takes these args
    args = build_parser().parse_args(container["args"])  # exits (SystemExit) on an unknown flag
    assert args.command == "operator"
    replicas = values.get("replicas", 1)
    assert args.standalone is (replicas == 1)
    assert args.peering == (values.get("peering", {}).get("name", "fedfleet") if replicas > 1 else "fedfleet")
    assert args.namespace == values.get("namespaces", []) and args.all_namespaces is not bool(args.namespace)
    assert args.log_format == values.get("logFormat", "json")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.metrics_port == ports["metrics"]
    assert args.liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_one_replica_runs_standalone_and_never_two_at_once() -> None:
    objs = render(HUB)
    assert of_kind(objs, "Deployment")[0]["spec"]["strategy"] == {"type": "Recreate"}
    assert of_kind(objs, "ClusterKopfPeering") == of_kind(objs, "KopfPeering") == []
    assert not any(g == "kopf.dev" for _, g, _ in rules(of_kind(objs, "ClusterRole")[0]))


def test_replicas_elect_a_leader_through_a_cluster_peering() -> None:
    objs = render(HUB, load_values(HUB / "ci" / "replicas-peering.yaml"))
    assert "strategy" not in of_kind(objs, "Deployment")[0]["spec"]
    assert [p["metadata"]["name"] for p in of_kind(objs, "ClusterKopfPeering")] == ["fedfleet-hub"]
    granted = rules(of_kind(objs, "ClusterRole")[0])
    assert {r for r in granted if r[1] == "kopf.dev"} == {
        (verb, "kopf.dev", "clusterkopfpeerings") for verb in ("get", "list", "watch", "patch")
    }


def test_a_namespaced_install_splits_the_same_permissions_into_roles() -> None:
    cluster_wide = rules(of_kind(render(HUB), "ClusterRole")[0])
    objs = render(HUB, load_values(HUB / "ci" / "namespaced.yaml"))
    roles = of_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objs, "RoleBinding")}
    for role in roles:
        binding = bindings[role["metadata"]["namespace"]]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "fedfleet-operator", "namespace": "fedfleet"}
        ]
    reads = rules(of_kind(objs, "ClusterRole")[0])
    asked = {("create", "authorization.k8s.io", "selfsubjectaccessreviews")}  # a question, stored nowhere
    assert {verb for verb, _, _ in reads - asked} <= {"get", "list", "watch"}  # nothing written cluster-wide
    assert reads | rules(roles[0]) == cluster_wide
    container = operator(objs)["spec"]["containers"][0]
    assert {
        "name": "FEDFLEET_IMAGE",
        "value": "registry.example.com/fedfleet/fedfleet:0.1.0-cuda",
    } in container["env"]


def test_a_namespaced_install_with_replicas_peers_in_each_namespace() -> None:
    objs = render(HUB, load_values(HUB / "ci" / "namespaced-peering.yaml"))
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in of_kind(objs, "KopfPeering")] == [
        ("fl-prod", "fedfleet")
    ]
    role = of_kind(objs, "Role")[0]
    assert ("patch", "kopf.dev", "kopfpeerings") in rules(role)
    assert not any(g == "kopf.dev" for _, g, _ in rules(of_kind(objs, "ClusterRole")[0]))


@pytest.mark.parametrize("variant", variants(), ids=variant_id)
def test_no_rbac_rule_uses_a_wildcard(variant: tuple[Path, Path | None]) -> None:
    for obj in render(variant[0], load_values(variant[1])):
        if obj["kind"] in RBAC_KINDS:
            for rule in obj["rules"]:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert "resourceNames" not in rule and "nonResourceURLs" not in rule


@pytest.mark.parametrize("values", [None, HUB / "ci" / "replicas-peering.yaml"], ids=["defaults", "monitor"])
def test_metrics_service_monitor_and_budget_select_the_operator(values: Path | None) -> None:
    objs = render(HUB, load_values(values))
    pod_labels = operator(objs)["metadata"]["labels"]
    ports = {p["name"] for p in operator(objs)["spec"]["containers"][0]["ports"]}
    service = of_kind(objs, "Service")[0]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"] and "metrics" in ports
    budget = of_kind(objs, "PodDisruptionBudget")[0]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items() and budget["maxUnavailable"] == 1
    for monitor in of_kind(objs, "ServiceMonitor")[:1]:
        assert monitor["metadata"]["name"] == "fedfleet"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
        assert monitor["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize("namespaces", [[], ["team-a", "team-b"]], ids=["cluster-wide", "namespaced"])
def test_a_service_monitor_scrapes_every_aggregator_the_operator_creates(namespaces: list[str]) -> None:
    objs = render(HUB, {"namespaces": namespaces, "metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = next(
        m for m in of_kind(objs, "ServiceMonitor") if m["metadata"]["name"].endswith("-aggregators")
    )
    spec = parse_training(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "t"},
            "spec": {"task": {"name": "digits-mlp"}, "rounds": 1, "sites": {"names": ["a"]}},
        }
    ).spec
    service = res.aggregator_service(res.TrainingRef("t", "team-a", "uid"), spec)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    expected = {"matchNames": namespaces} if namespaces else {"any": True}
    assert monitor["spec"]["namespaceSelector"] == expected


def test_an_image_digest_pins_the_operator_and_the_pods_it_creates() -> None:
    digest = "sha256:" + "ab" * 32
    container = operator(render(HUB, {"image": {"tag": "0.1.0", "digest": digest}}))["spec"]["containers"][0]
    pinned = f"ghcr.io/fedfleet/fedfleet:0.1.0@{digest}"
    assert container["image"] == pinned
    assert {"name": "FEDFLEET_IMAGE", "value": pinned} in container["env"]  # the default of every pod
    assert "@" not in operator(render(HUB))["spec"]["containers"][0]["image"]  # no digest: the tag
    with pytest.raises(helm.HelmValuesError, match="/image/digest"):
        render(HUB, {"image": {"digest": "latest"}})


def test_replicas_prefer_different_nodes_unless_the_values_give_an_affinity() -> None:
    assert "affinity" not in operator(render(HUB))["spec"]
    objs = render(HUB, {"replicas": 2})
    template = operator(objs)
    term = template["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][
        0
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert operator(render(HUB, {"replicas": 2, "affinity": own}))["spec"]["affinity"] == own


def test_the_site_gateway_is_served_by_the_operator_and_exposed_by_a_service() -> None:
    objs = render(HUB, load_values(HUB / "ci" / "site-gateway.yaml"))
    service = next(o for o in of_kind(objs, "Service") if o["metadata"]["name"].endswith("-site-gateway"))
    assert service["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in service["spec"]["ports"]] == [7443, 7444]
    container = of_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = OperatorSettings.from_env(env)
    assert (settings.site_gateway_port, settings.site_gateway_enrol_port) == (7443, 7444)
    assert settings.site_gateway_names == ("hub.example.org",) and settings.namespace == "fedfleet"
    assert {"site-gateway", "site-enrol"} <= {p["name"] for p in container["ports"]}
    assert not [o for o in render(HUB) if o["metadata"]["name"].endswith("-site-gateway")]  # off by default
