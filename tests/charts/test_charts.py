"""Both charts, linted strictly, rendered for their defaults and every ci/ values file, and every
object checked against Kubernetes' own schemas (1.29 and the newest kubernetes-validate ships)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.charts.render import (
    CHARTS,
    HUB,
    REPO,
    SITE,
    Object,
    load_values,
    of_kind,
    render,
    render_files,
    variant_id,
    variants,
)
from tests.kube.schema import crd_validator, field_errors, unknown_fields

KUBE_VERSIONS = ["1.29", kubernetes_validate.utils.latest_version()]
# kinds whose CRDs belong to other projects (Prometheus Operator, Kueue): their use is checked
# by the tests that render them, their schemas are not available offline
EXTERNAL_KINDS = {"ServiceMonitor", "LocalQueue"}
HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
VARIANTS = variants()


def crd_validators() -> dict[tuple[str, str], Any]:
    """(group, kind) -> a validator for fedfleet's CRDs (crds/) and kopf's the hub chart adds."""
    found = {}
    for path in [*sorted((REPO / "crds").glob("*.yaml")), HUB / "crds" / "kopf-peering.yaml"]:
        for crd in yaml.safe_load_all(path.read_text()):
            spec = crd["spec"]
            for version in spec["versions"]:  # the API server always accepts these two
                properties = version["schema"]["openAPIV3Schema"].setdefault("properties", {})
                properties.setdefault("apiVersion", {"type": "string"})
                properties.setdefault("kind", {"type": "string"})
            found[spec["group"], spec["names"]["kind"]] = crd_validator(crd, spec["versions"][0]["name"])
    return found


CUSTOM = crd_validators()


def kubernetes_errors(obj: Object, version: str) -> list[str]:
    """What the API server of `version` (or a CRD of ours) would refuse in obj; [] when valid."""
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    if (group, obj["kind"]) in CUSTOM:
        validator = CUSTOM[group, obj["kind"]]
        return [f'unknown field "{u}"' for u in unknown_fields(validator, obj)] + field_errors(validator, obj)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(map(str, err.path))}: {err.message}"]
    return []


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_charts_lint_clean_in_strict_mode(variant: tuple[Path, Path | None]) -> None:
    chart, values = variant
    report = helm.lint(chart, load_values(values), strict=True, kube_version="v1.29.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # warnings count as errors


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_rendered_object_is_valid_kubernetes(variant: tuple[Path, Path | None], version: str) -> None:
    chart, values = variant
    objs = render(chart, load_values(values))
    assert objs
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] not in EXTERNAL_KINDS:
            assert kubernetes_errors(obj, version) == [], where
        labels = obj["metadata"].get("labels", {})
        assert [k for k in HELM_LABELS if k not in labels] == [], where
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_the_crds_are_valid_for_kubernetes(version: str) -> None:
    crds = [d for p in sorted((HUB / "crds").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    assert {c["spec"]["group"] for c in crds} == {"fedfleet.io", "kopf.dev"}
    for crd in crds:
        assert kubernetes_errors(crd, version) == [], crd["metadata"]["name"]


def test_the_hub_chart_ships_the_repositorys_crds() -> None:
    ours = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    for name in ours:
        copy = HUB / "crds" / name
        assert copy.exists() and copy.read_text() == (REPO / "crds" / name).read_text(), (
            f"charts/fedfleet/crds/{name} differs from crds/{name}: run `make crds`"
        )
    extra = sorted(p.name for p in (HUB / "crds").glob("*.yaml") if p.name not in ours)
    assert extra == ["kopf-peering.yaml"]  # kopf's peering CRDs, for replicas > 1


def test_a_validator_refuses_what_an_api_server_would() -> None:
    """The checks above can fail: a typo'd field and a wrong type are caught, in ours and in core kinds."""
    deployment = next(o for o in render(HUB) if o["kind"] == "Deployment")
    deployment["spec"]["replica"] = 2
    assert kubernetes_errors(deployment, "1.29") == [
        "spec: Additional properties are not allowed ('replica' was unexpected)"
    ]
    site = next(o for o in render(SITE) if o["kind"] == "FederationSite")
    site["spec"]["capacity"] = "four"
    assert kubernetes_errors(site, "1.29") == [
        'spec.capacity: Invalid value: "string": spec.capacity in body must be of type integer: "string"'
    ]


def example_documents() -> list[tuple[str, Object]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in sorted((REPO / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


@pytest.mark.parametrize(("where", "doc"), example_documents(), ids=[w for w, _ in example_documents()])
def test_the_examples_are_valid_against_the_crds(where: str, doc: Object) -> None:
    if doc["apiVersion"].startswith(("fedfleet.io/", "kopf.dev/")):
        assert (
            "fedfleet.io" if doc["apiVersion"].startswith("fedfleet") else "kopf.dev",
            doc["kind"],
        ) in CUSTOM
    for version in KUBE_VERSIONS:
        assert kubernetes_errors(doc, version) == [], where


POD_TEMPLATES = ("Deployment", "StatefulSet", "DaemonSet", "Job")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_pod_is_restricted(variant: tuple[Path, Path | None]) -> None:
    chart, values = variant
    for obj in render(chart, load_values(values)):
        assert obj["kind"] != "Pod", "the charts run no bare pods"
        if obj["kind"] not in POD_TEMPLATES:
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
            assert ctx["runAsNonRoot"] is True and ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(
    ("chart", "values", "message"),
    [
        (HUB, {"replicas": "two"}, "at '/replicas': got string, want integer"),
        (HUB, {"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        (HUB, {"metrics": {"serviceMonitor": {"enabld": True}}}, "'enabld' not allowed"),
        (HUB, {"namespaces": "team-a"}, "at '/namespaces': got string, want array"),
        (HUB, {"logFormat": "xml"}, "at '/logFormat'"),
        (SITE, {"site": {"gpu": {"count": "1"}}}, "at '/site/gpu/count': got string, want integer"),
        (SITE, {"site": {"gpus": 1}}, "additional properties 'gpus' not allowed"),
        (SITE, {"data": {"existingClaim": 7}}, "at '/data/existingClaim': got number, want string"),
        (SITE, {"kueue": {"enabled": "yes"}}, "at '/kueue/enabled': got string, want boolean"),
    ],
)
def test_the_schema_refuses_wrong_types_and_unknown_keys(chart: Path, values: Object, message: str) -> None:
    with helm.Chart.load(chart) as loaded, pytest.raises(helm.HelmValuesError) as refused:
        loaded.validate_schema(values)
    assert message in str(refused.value)
    with pytest.raises(helm.HelmValuesError) as refused_install:  # `helm install` refuses it too
        render_files(chart, values)
    assert message in str(refused_install.value)


BROKEN_TEMPLATES = {
    "unclosed action": "kind: ConfigMap\nmetadata:\n  name: {{ .Release.Name\n",
    "unknown function": "kind: ConfigMap\nmetadata:\n  name: {{ .Release.Name | nosuchfunction }}\n",
    "missing value": "kind: ConfigMap\nmetadata:\n  name: {{ .Values.nothing.here }}\n",
}


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
@pytest.mark.parametrize("broken", sorted(BROKEN_TEMPLATES))
def test_a_broken_template_is_caught(chart: Path, broken: str, tmp_path: Path) -> None:
    copy = shutil.copytree(chart, tmp_path / chart.name)
    (copy / "templates" / "broken.yaml").write_text("apiVersion: v1\n" + BROKEN_TEMPLATES[broken])
    with pytest.raises(helm.HelmRenderError) as failed:
        render_files(copy)
    assert "broken.yaml" in str(failed.value)
    report = helm.lint(copy, strict=True)
    assert any("broken.yaml" in m["error"] and m["severity"] == 3 for m in report["messages"]), report


def test_a_template_that_renders_an_invalid_object_is_caught(tmp_path: Path) -> None:
    copy = shutil.copytree(HUB, tmp_path / "fedfleet")
    deployment = copy / "templates" / "deployment.yaml"
    deployment.write_text(
        deployment.read_text().replace("replicas: {{ .Values.replicas }}", "replicas: many")
    )
    objs = render(copy)
    assert kubernetes_errors(of_kind(objs, "Deployment")[0], "1.29") == [
        "spec.replicas: 'many' is not of type 'integer', 'null'"
    ]


@pytest.mark.parametrize(("chart", "namespace"), [(HUB, "default"), (SITE, "site-a")], ids=["hub", "site"])
def test_notes_tell_the_next_command(chart: Path, namespace: str) -> None:
    notes = render_files(chart)[f"{chart.name}/templates/NOTES.txt"]
    assert f"kubectl get fedfleet -n {namespace}" in notes
