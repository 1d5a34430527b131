"""The CRDs, generated from the pydantic spec models so that schema and code cannot drift.

`python -m fedfleet.api.crds crds/` writes them; a test fails when the committed files differ.
Spec and status schemas come from the models (`api/training.py`, `api/status.py`, ...: types,
ranges, enums, defaults, descriptions), converted to Kubernetes structural OpenAPI, so every
status field the operator writes is declared (an API server prunes undeclared ones).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fedfleet.api.platform import PLATFORM_NAME, ClusterPodTemplateSpec
from fedfleet.api.round import FederatedRoundSpec
from fedfleet.api.site import FederationSiteSpec
from fedfleet.api.status import RoundStatus, SiteStatus, TrainingStatus
from fedfleet.api.training import FederatedTrainingSpec

GROUP = "fedfleet.io"
VERSION = "v1alpha1"
CATEGORY = "fedfleet"

Schema = dict[str, Any]


def structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """pydantic JSON Schema -> Kubernetes structural OpenAPI v3 (no $ref, no null types)."""
    if "$ref" in schema:
        return structural(
            copy.deepcopy(defs[schema["$ref"].split("/")[-1]])
            | {k: v for k, v in schema.items() if k not in ("$ref",)},
            defs,
        )
    out = {k: v for k, v in schema.items() if k not in ("title", "additionalProperties", "$defs")}
    variants = out.pop("anyOf", None)
    if variants is not None:
        kinds = [v for v in variants if v.get("type") != "null"]
        if len(kinds) < len(variants):
            out["nullable"] = True
        types = sorted(v.get("type", "") for v in kinds)
        if types == ["integer", "string"]:
            out["x-kubernetes-int-or-string"] = True
        elif len(kinds) == 1:
            out = structural(kinds[0], defs) | {
                k: v for k, v in out.items() if k != "default" or v is not None
            }
        else:
            raise ValueError(f"cannot express anyOf {variants} structurally")
    if out.get("default", 0) is None:
        del out["default"]
    if isinstance(out.get("exclusiveMinimum"), int | float) and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if isinstance(out.get("exclusiveMaximum"), int | float) and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if out.get("type") == "object":
        if "properties" in out:
            out["properties"] = {k: structural(v, defs) for k, v in out["properties"].items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        elif "properties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array" and "items" in out:
        out["items"] = structural(out["items"], defs)
    return out


def model_schema(model: type[BaseModel]) -> Schema:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.get("$defs", {}))


def without_defaults(schema: Schema) -> Schema:
    """A status schema: only the operator writes status, always whole, so an API server's
    defaulting would only add values nobody wrote."""
    out = {k: v for k, v in schema.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: without_defaults(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = without_defaults(out[key])
    return out


def status_schema(model: type[BaseModel]) -> Schema:
    return without_defaults(model_schema(model))


def column(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> Schema:
    out: Schema = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        out["priority"] = priority
    if description:
        out["description"] = description
    return out


AGE = column("Age", ".metadata.creationTimestamp", "date")


# Baked into running pods (the manifest ConfigMap the aggregator and clients read at start, the
# Secrets made for the sites): refused by the API server from the moment the operator first
# made pods from the spec (status.startTime) on, through a suspend. What stays editable is the
# operator's own and applies from its next pass: rounds (may grow, not shrink), minClients,
# roundTimeoutSeconds, retry, suspend and suspendPolicy, release (read at the end).
BAKED_FIELDS = (
    "task",
    "model",
    "sites",
    "clientsPerSite",
    "strategy",
    "secureAggregation",
    "updates",
    "compression",
    "privacy",
    "lineage",
    "tls",
    "aggregator",
    "client",
)
STARTED = "has(oldSelf.status) && has(oldSelf.status.startTime)"
FINISHED = (
    "has(oldSelf.status) && has(oldSelf.status.phase) && oldSelf.status.phase in ['Succeeded', 'Failed']"
)


# What stays editable while the training runs: frozen too once it has finished.
OPERATOR_FIELDS = (
    "rounds",
    "minClients",
    "roundTimeoutSeconds",
    "retry",
    "suspend",
    "suspendPolicy",
    "release",
    "retention",
    "history",
)


def unchanged(name: str) -> str:
    return (
        f"(has(self.spec.{name}) == has(oldSelf.spec.{name}) && "
        f"(!has(self.spec.{name}) || self.spec.{name} == oldSelf.spec.{name}))"
    )


def running_training_rules() -> list[Schema]:
    """CEL transition rules: what a started training's spec may not change, each naming its field."""
    rules = [
        {
            "rule": f"!({STARTED}) || {unchanged(name)}",
            "message": f"spec.{name} is immutable once the training has started (its pods read it at start)",
        }
        for name in BAKED_FIELDS
    ]
    rules += [
        {
            "rule": f"!({STARTED}) || self.spec.rounds >= oldSelf.spec.rounds",
            "message": "spec.rounds may grow but not shrink once the training has started",
        },
        {
            "rule": f"!({FINISHED}) || (" + " && ".join(unchanged(n) for n in OPERATOR_FIELDS) + ")",
            "message": "spec is immutable once the training has finished (Succeeded or Failed); "
            "start a new FederatedTraining from its model (spec.model.source) to train on",
        },
    ]
    return rules


def crd(
    kind: str,
    plural: str,
    short: str,
    spec: Schema,
    status: Schema | None,
    columns: list[Schema],
    rules: list[Schema] | None = None,
    scope: str = "Namespaced",
) -> Schema:
    """`status` None: an object nobody writes a status for (no status subresource)."""
    root: Schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            **({"status": status} if status is not None else {}),
        },
    }
    if rules:
        root["x-kubernetes-validations"] = rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if status is not None else {}),
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render() -> dict[str, Schema]:
    """File name -> CRD."""
    return {
        "federatedtrainings.yaml": crd(
            "FederatedTraining",
            "federatedtrainings",
            "ft",
            model_schema(FederatedTrainingSpec),
            status_schema(TrainingStatus),
            [
                column("Phase", ".status.phase"),
                column("Round", ".status.roundProgress"),
                column("Clients", ".status.clientsReady", description="ready/expected clients"),
                column("Loss", ".status.lastLoss", "number"),
                column("Held-out", ".status.heldOut", description="the newest model's held-out metric"),
                column("Epsilon", ".status.epsilonRounded", "number", description="3 significant digits"),
                column("Reason", ".status.reason", description="why the training is in its phase"),
                AGE,
                column("Model", ".status.modelDigest", priority=1),
                column("Lineage", ".status.lineageHead", priority=1),
                column("Released", ".status.release.message", priority=1),
            ],
            running_training_rules(),
        ),
        "federatedrounds.yaml": crd(
            "FederatedRound",
            "federatedrounds",
            "fr",
            model_schema(FederatedRoundSpec),
            status_schema(RoundStatus),
            [
                column("Training", ".spec.training"),
                column("Round", ".spec.round", "integer"),
                column("Kind", ".spec.kind", priority=1),
                column("Phase", ".status.phase"),
                column("Reported", ".status.reported", "integer"),
                column("Expected", ".status.expected", "integer"),
                column("Dropped", ".status.dropped", "integer"),
                column("Retries", ".status.retries", "integer"),
                column("Epsilon", ".status.epsilon", "number"),
                column("Duration", ".status.duration"),
                AGE,
            ],
        ),
        "clusterpodtemplates.yaml": crd(
            "ClusterPodTemplate",
            "clusterpodtemplates",
            "cpt",
            model_schema(ClusterPodTemplateSpec),
            None,
            [AGE],
            [
                {
                    "rule": f"self.metadata.name == '{PLATFORM_NAME}'",
                    "message": f"the operator reads one ClusterPodTemplate, named {PLATFORM_NAME}",
                }
            ],
            scope="Cluster",
        ),
        "federationsites.yaml": crd(
            "FederationSite",
            "federationsites",
            "site",
            model_schema(FederationSiteSpec),
            status_schema(SiteStatus),
            [
                column("Namespace", ".spec.namespace"),
                column("GPUs", ".spec.gpu.count", "integer"),
                column("Ready", ".status.ready", "boolean"),
                column("Remote", ".spec.remote", "boolean"),
                column("Connected", ".status.connected", "boolean"),
                column("Clients", ".status.clientsRunning", "integer", description="client pods running"),
                column("Updates", ".status.updatesAccepted", "integer", description="updates accepted"),
                column("Agent", ".status.agentVersion", priority=1),
                column("Heartbeat", ".status.lastHeartbeat", "date", priority=1),
                column("GPUsInUse", ".status.gpusInUse", "integer", priority=1),
                column("Refused", ".status.updatesRefused", "integer", priority=1),
                column("Received", ".status.bytesReceived", "integer", priority=1),
                column("Sent", ".status.bytesSent", "integer", priority=1),
                column("ClientSeconds", ".status.clientSeconds", "number", priority=1),
                AGE,
            ],
        ),
    }


def dump(document: Schema) -> str:
    return (
        "# Generated by `python -m fedfleet.api.crds crds/` from fedfleet.api; do not edit.\n"
        + yaml.safe_dump(document, sort_keys=False, width=120)
    )


def main(argv: list[str]) -> int:
    target = Path(argv[1] if len(argv) > 1 else "crds")
    target.mkdir(parents=True, exist_ok=True)
    for name, document in render().items():
        (target / name).write_text(dump(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
