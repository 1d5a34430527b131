"""RBAC against use: every request the operator made in the end-to-end tests (recorded by the
test API server under the operator's own identity) must be granted by the charts' ClusterRole
and site Role, and every grant must have been used, or be named below with the code path the
end-to-end tests do not reach. Runs after tests/controller (see conftest.py) and reuses its
records: no second operator run."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import pytest

from tests.charts.render import HUB, SITE, Object, load_values, of_kind, render
from tests.kube.fixtures import OPERATOR_CALLS
from tests.kube.server import Call

Permission = tuple[str, str, str]  # verb, API group, resource[/subresource]
E2E_TESTS = ("tests/controller/test_operator_e2e.py", "tests/controller/test_operator_specs.py")
# Granted for code paths the end-to-end tests do not reach; each must still be granted.
UNEXERCISED: dict[Permission, str] = {
    (
        "delete",
        "fedfleet.io",
        "federatedrounds",
    ): "a retried round replaces its record (reconciler._start_round)",
    ("create", "", "persistentvolumeclaims"): "spec.aggregator.stateVolumeSize (resources.state_claim)",
    ("delete", "", "persistentvolumeclaims"): "spec.retention.stateVolume: Delete (handlers.cleanup)",
    ("list", "fedfleet.io", "federatedrounds"): "spec.history pruning (history.History.prune)",
    ("get", "fedfleet.io", "federatedtrainings"): "a site's unclaimed training (gateway._check_orphan)",
    ("get", "", "persistentvolumeclaims"): "a site's dataVolumeClaim (site_status.site_readiness)",
    ("get", "", "namespaces"): "a FederationSite naming another namespace (handlers.site_status)",
    (
        "get",
        "",
        "secrets",
    ): "a user's issuer Secret (spec.tls.issuerSecret), or adopting one after a conflict",
    ("update", "", "secrets"): "a certificate replaced when it is due for rotation (certificates._write)",
}
# what the operator writes in a site's namespace: client pods, the manifest and certificates they mount
SITE_RESOURCES = {"pods", "configmaps", "secrets"}
# what kopf lists and watches cluster-wide when cluster-wide, and per namespace when namespaced
KOPF_WATCHES = {
    ("list", "fedfleet.io", "federatedtrainings"),
    ("watch", "fedfleet.io", "federatedtrainings"),
    ("list", "fedfleet.io", "federationsites"),  # and its index of sites (handlers.federation_sites)
    ("watch", "fedfleet.io", "federationsites"),
    ("list", "", "pods"),  # the index of the trainings' pods (controller/handlers.training_pods)
    ("watch", "", "pods"),
}


def permission(call: Call) -> Permission:
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    return (call.verb, call.group, resource)


def granted(obj: Object) -> set[Permission]:
    return {
        (verb, group, resource)
        for rule in obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@dataclass
class Mismatch:
    not_granted: set[Permission] = field(default_factory=set)
    never_used: set[Permission] = field(default_factory=set)


def compare(calls: list[Call], cluster_role: Object, site_role: Object) -> Mismatch:
    """A cluster-wide hub install plus one site install against what the operator did."""
    used = {permission(c) for c in calls}
    in_namespace = {permission(c) for c in calls if c.namespace}
    cluster, site = granted(cluster_role), granted(site_role)
    return Mismatch(
        not_granted=(used - cluster)  # the hub's ClusterRole alone must cover a cluster-wide install
        | {p for p in in_namespace if p[1] == "" and p[2] in SITE_RESOURCES} - site,  # and a site's
        never_used=(cluster - used - set(UNEXERCISED)) | (site - in_namespace - set(UNEXERCISED)),
    )


def operator_calls(request: pytest.FixtureRequest) -> list[Call]:
    if os.environ.get("FEDFLEET_TEST_KUBECONFIG"):
        pytest.skip("a real cluster keeps no request records")
    calls = request.config.stash.get(OPERATOR_CALLS, [])
    ran_e2e = any(item.nodeid.startswith(E2E_TESTS) for item in request.session.items)
    if not ran_e2e:  # other operator tests alone (tests/controller/test_pod_templates.py) use too little
        pytest.skip(f"needs the requests of {E2E_TESTS[0]} in the same run")
    assert calls, "the operator tests ran but the test API server recorded no operator request"
    return calls


def test_the_charts_grant_exactly_what_the_operator_uses(request: pytest.FixtureRequest) -> None:
    calls = operator_calls(request)
    mismatch = compare(calls, of_kind(render(HUB), "ClusterRole")[0], of_kind(render(SITE), "Role")[0])
    # not granted: grant it in charts/*/templates/; never used: remove it, or name its path in UNEXERCISED
    assert {"not granted": mismatch.not_granted, "granted, never used": mismatch.never_used} == {
        "not granted": set(),
        "granted, never used": set(),
    }
    assert set(UNEXERCISED) <= granted(of_kind(render(HUB), "ClusterRole")[0])


def test_a_namespaced_install_needs_no_read_across_namespaces(request: pytest.FixtureRequest) -> None:
    """Every cluster-wide request the operator made (kopf's watches aside, which a namespaced
    install makes per namespace) is a cluster-scoped one: no list of pods, sites, ConfigMaps or
    Secrets across namespaces; the namespaced ClusterRole grants just those."""
    calls = operator_calls(request)
    objs = render(HUB, load_values(HUB / "ci" / "namespaced.yaml"))
    reads, role = granted(of_kind(objs, "ClusterRole")[0]), granted(of_kind(objs, "Role")[0])
    cluster_scoped = {permission(c) for c in calls if c.namespace is None} - KOPF_WATCHES
    assert cluster_scoped - reads == set()
    assert reads - cluster_scoped - set(UNEXERCISED) == set()
    assert {r for _, _, r in reads} == {
        "customresourcedefinitions",
        "namespaces",
        "clusterpodtemplates",
        "selfsubjectaccessreviews",
    }
    assert {permission(c) for c in calls if c.namespace} - role == set()


def test_removing_a_used_permission_or_adding_an_unused_one_is_caught(request: pytest.FixtureRequest) -> None:
    """The comparison above on the same records, with the ClusterRole edited both ways."""
    calls = operator_calls(request)
    cluster_role, site_role = of_kind(render(HUB), "ClusterRole")[0], of_kind(render(SITE), "Role")[0]
    fewer = copy.deepcopy(cluster_role)
    pods = next(r for r in fewer["rules"] if r["resources"] == ["pods"])
    pods["verbs"].remove("patch")  # the operator annotates a client pod it gives up on
    assert compare(calls, fewer, site_role).not_granted == {("patch", "", "pods")}
    more = copy.deepcopy(cluster_role)
    more["rules"].append({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]})
    assert compare(calls, more, site_role).never_used == {("get", "", "nodes")}
    narrower_site = copy.deepcopy(site_role)
    narrower_site["rules"] = [r for r in narrower_site["rules"] if r["resources"] != ["configmaps"]]
    assert compare(calls, cluster_role, narrower_site).not_granted == {
        ("create", "", "configmaps"),
        ("list", "", "configmaps"),
        ("delete", "", "configmaps"),
    }
