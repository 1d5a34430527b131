"""The CRDs, generated from the pydantic spec models so that schema and code cannot drift.

`python -m fedfleet.api.crds crds/` writes them; a test fails when the committed files differ.
Spec schemas come from the models (types, ranges, enums, defaults, descriptions), converted
to Kubernetes structural OpenAPI; status schemas are written here, as only the operator
writes status.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fedfleet.api.round import FederatedRoundSpec
from fedfleet.api.site import FederationSiteSpec
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


def spec_schema(model: type[BaseModel]) -> Schema:
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.get("$defs", {}))


CONDITIONS: Schema = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    },
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
METRICS: Schema = {"type": "object", "additionalProperties": {"type": "number"}}
STRINGS: Schema = {"type": "array", "items": {"type": "string"}}

TRAINING_STATUS: Schema = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": ["Pending", "Running", "Succeeded", "Failed"]},
        "currentRound": {"type": "integer"},
        "completedRounds": {"type": "integer"},
        "roundProgress": {"type": "string", "description": "completed/total rounds, for printing"},
        "clientsReady": {"type": "string", "description": "ready/expected clients, for printing"},
        "expectedClients": {"type": "integer"},
        "lastLoss": {"type": "number"},
        "epsilon": {"type": "number", "description": "Privacy budget spent so far (DP)."},
        "modelDigest": {"type": "string"},
        "lineageHead": {"type": "string", "description": "Digest of the newest lineage record."},
        "lineagePublicKey": {"type": "string", "description": "PEM of the key signing the lineage records."},
        "lineageKeyFingerprint": {"type": "string", "description": "sha256 of the raw lineage public key."},
        "refusedClients": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Clients whose site policy refused this training, with the reason.",
        },
        "roundFailures": {"type": "object", "additionalProperties": {"type": "integer"}},
        "lastFailure": {"type": "string"},
        "evaluated": {"type": "boolean", "description": "The final model's evaluation round is done."},
        "waitingSince": {"type": "number", "nullable": True},
        "clientStarts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "metrics": METRICS,
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer"},
        "conditions": CONDITIONS,
    },
}
ROUND_STATUS: Schema = {
    "type": "object",
    "properties": {
        "phase": {
            "type": "string",
            "enum": ["Pending", "Scheduling", "Training", "Aggregating", "Succeeded", "Failed"],
        },
        "expected": {"type": "integer"},
        "reported": {"type": "integer"},
        "reportedClients": STRINGS,
        "droppedClients": STRINGS,
        "dropped": {"type": "integer"},
        "retries": {"type": "integer"},
        "clients": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "state": {"type": "string"},
                    "reason": {"type": "string"},
                    "attempts": {"type": "integer"},
                },
            },
        },
        "reason": {"type": "string"},
        "metrics": METRICS,
        "aggregateDigest": {"type": "string"},
        "bytesReceived": {"type": "integer", "description": "Update bytes accepted (after compression)."},
        "epsilon": {"type": "number", "description": "Training epsilon once this round was released (DP)."},
        "privacy": {
            "type": "object",
            "description": "Differential privacy the released round carried.",
            "properties": {
                "mode": {"type": "string"},
                "clipNorm": {"type": "number"},
                "noiseMultiplier": {"type": "number"},
                "effectiveNoiseMultiplier": {"type": "number"},
                "expectedClients": {"type": "integer"},
                "survivors": {"type": "integer"},
                "maxUpdateNorm": {"type": "number"},
            },
        },
        "startTime": {"type": "string", "format": "date-time"},
        "completionTime": {"type": "string", "format": "date-time"},
        "duration": {"type": "string"},
        "conditions": CONDITIONS,
    },
}
SITE_STATUS: Schema = {
    "type": "object",
    "properties": {
        "ready": {"type": "boolean"},
        "gpus": {"type": "integer"},
        "message": {"type": "string"},
        "conditions": CONDITIONS,
        # a remote site (spec.remote), written by the hub's site gateway
        "connected": {"type": "boolean", "description": "The site's agent holds its stream to the gateway."},
        "lastHeartbeat": {"type": "string", "format": "date-time"},
        "agentVersion": {"type": "string"},
        "clientsRunning": {"type": "integer"},
        "gpusInUse": {"type": "integer"},
        "refusedWork": {"type": "integer", "description": "Clients the site's policy refused."},
        "enrolled": {"type": "string", "format": "date-time", "description": "When the agent enrolled."},
    },
}


def column(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> Schema:
    out: Schema = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        out["priority"] = priority
    if description:
        out["description"] = description
    return out


AGE = column("Age", ".metadata.creationTimestamp", "date")


# Baked into running pods (the manifest ConfigMap the aggregator and clients read at start):
# refused by the API server while the training runs. rounds may grow; minClients,
# roundTimeoutSeconds and retry are the operator's own and apply from its next pass.
BAKED_FIELDS = (
    "task",
    "model",
    "sites",
    "clientsPerSite",
    "strategy",
    "secureAggregation",
    "compression",
    "privacy",
    "lineage",
    "tls",
    "aggregator",
    "client",
)
RUNNING = "has(oldSelf.status) && has(oldSelf.status.phase) && oldSelf.status.phase == 'Running'"


def running_training_rules() -> list[Schema]:
    """CEL transition rules: what a running training's spec may not change, each naming its field."""
    rules = [
        {
            "rule": f"!({RUNNING}) || (has(self.spec.{name}) == has(oldSelf.spec.{name}) && "
            f"(!has(self.spec.{name}) || self.spec.{name} == oldSelf.spec.{name}))",
            "message": f"spec.{name} is immutable while the training runs (its pods read it at start)",
        }
        for name in BAKED_FIELDS
    ]
    rules.append(
        {
            "rule": f"!({RUNNING}) || self.spec.rounds >= oldSelf.spec.rounds",
            "message": "spec.rounds may grow but not shrink while the training runs",
        }
    )
    return rules


def crd(
    kind: str,
    plural: str,
    short: str,
    spec: Schema,
    status: Schema,
    columns: list[Schema],
    rules: list[Schema] | None = None,
) -> Schema:
    root: Schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
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
            "scope": "Namespaced",
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
                    "subresources": {"status": {}},
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
            spec_schema(FederatedTrainingSpec),
            TRAINING_STATUS,
            [
                column("Phase", ".status.phase"),
                column("Round", ".status.roundProgress"),
                column("Clients", ".status.clientsReady", description="ready/expected clients"),
                column("Loss", ".status.lastLoss", "number"),
                column("Epsilon", ".status.epsilon", "number"),
                AGE,
                column("Model", ".status.modelDigest", priority=1),
                column("Lineage", ".status.lineageHead", priority=1),
            ],
            running_training_rules(),
        ),
        "federatedrounds.yaml": crd(
            "FederatedRound",
            "federatedrounds",
            "fr",
            spec_schema(FederatedRoundSpec),
            ROUND_STATUS,
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
        "federationsites.yaml": crd(
            "FederationSite",
            "federationsites",
            "site",
            spec_schema(FederationSiteSpec),
            SITE_STATUS,
            [
                column("Namespace", ".spec.namespace"),
                column("GPUs", ".spec.gpu.count", "integer"),
                column("Ready", ".status.ready", "boolean"),
                column("Remote", ".spec.remote", "boolean"),
                column("Connected", ".status.connected", "boolean"),
                column("Clients", ".status.clientsRunning", "integer", description="client pods running"),
                column("Agent", ".status.agentVersion", priority=1),
                column("Heartbeat", ".status.lastHeartbeat", "date", priority=1),
                column("GPUsInUse", ".status.gpusInUse", "integer", priority=1),
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
