"""The committed CRDs are generated from the spec models (run `make crds`), and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fedfleet.api.crds import dump, render

REPO = Path(__file__).resolve().parents[1]


def test_committed_crds_match_the_spec_models() -> None:
    rendered = render()
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(rendered)
    for name, document in rendered.items():
        assert (REPO / "crds" / name).read_text() == dump(document), f"crds/{name} is stale: run `make crds`"


def walk(schema: dict[str, Any], where: str = "") -> list[str]:
    """Violations of the structural-schema rules the API server enforces."""
    problems = []
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
        if banned in schema and not (banned == "anyOf" and schema.get("x-kubernetes-int-or-string")):
            problems.append(f"{where}: {banned}")
    if (
        "type" not in schema
        and not schema.get("x-kubernetes-int-or-string")
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{where}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{where}: properties and additionalProperties")
    for key, sub in schema.get("properties", {}).items():
        problems += walk(sub, f"{where}.{key}")
    if isinstance(schema.get("items"), dict):
        problems += walk(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += walk(schema["additionalProperties"], f"{where}{{}}")
    return problems


def test_crds_are_structural_with_status_and_printer_columns() -> None:
    for name in render():
        crd = yaml.safe_load((REPO / "crds" / name).read_text())
        version = crd["spec"]["versions"][0]
        assert walk(version["schema"]["openAPIV3Schema"]) == [], name
        has_status = "status" in version["schema"]["openAPIV3Schema"]["properties"]
        assert version.get("subresources") == ({"status": {}} if has_status else None), name
        assert "fedfleet" in crd["spec"]["names"]["categories"]
        assert version["additionalPrinterColumns"]


def test_schema_carries_ranges_enums_and_defaults() -> None:
    spec = render()["federatedtrainings.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"task", "rounds", "sites"}
    assert props["rounds"]["minimum"] == 1
    assert props["strategy"]["properties"]["name"]["enum"] == ["FedAdam", "FedAvg", "FedProx"]
    assert props["minClients"]["default"] == 1
    assert props["task"]["properties"]["config"]["x-kubernetes-preserve-unknown-fields"] is True
    limits = props["client"]["properties"]["resources"]["properties"]["limits"]
    assert limits["additionalProperties"]["x-kubernetes-int-or-string"] is True


def test_images_have_no_schema_default_so_the_operators_image_applies() -> None:
    """An API server writes schema defaults into stored objects: a baked image would beat the
    hub chart's FEDFLEET_IMAGE for any training that has a client or aggregator section (the
    real lane's Helm test shows it end to end)."""
    spec = yaml.safe_load((REPO / "crds" / "federatedtrainings.yaml").read_text())["spec"]["versions"][0]
    properties = spec["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for section in ("aggregator", "client"):
        image = properties[section]["properties"]["image"]
        assert "default" not in image and image["minLength"] == 1, image
