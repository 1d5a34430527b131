"""`fedfleet lineage export`: an in-toto Statement (SLSA provenance v1 predicate) and a model card.

Both are derived from a verified chain only, so what they claim is what the signed records say.
The statement's subject is the final global model (or adapter) file by its sha256; each round's
lineage record is listed as a byproduct by its digest, so the statement ties to the chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedfleet.aggregator.checkpoints import MODEL_FILE
from fedfleet.provenance.records import Record
from fedfleet.provenance.verify import Verified, abbreviate

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://fedfleet.io/FederatedTraining/v1"
BUILDER_ID = "https://fedfleet.io/aggregator"
STATEMENT_FILE = "provenance.intoto.json"
MODEL_CARD_FILE = "MODEL_CARD.md"


def _sha256(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    return {algorithm: value}


def _contributors(records: list[Record]) -> set[str]:
    return {c for r in records[1:] for c in r.get("clients") or []}


def statement(result: Verified) -> dict[str, Any]:
    records = result.records
    first, last = records[0], records[-1]
    base = first.get("base_model") or {}
    dependencies = [{"name": "initial global model (round 0)", "digest": _sha256(first["model_digest"])}]
    if base.get("digest"):
        dependencies.insert(
            0, {"name": "base model", "uri": base.get("source") or "", "digest": _sha256(base["digest"])}
        )
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": f"{last['training']}/rounds/round-{last['round']:06d}/{MODEL_FILE}",
                "digest": _sha256(last["model_digest"]),
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "training": last["training"],
                    "task": base.get("task"),
                    "baseModel": base,
                    "rounds": last["round"],
                    "strategy": last.get("strategy"),
                    "secureAggregation": last.get("secure_aggregation"),
                    "privacy": last.get("privacy"),
                    "clientIdentity": last.get("client_identity"),
                },
                "internalParameters": {"fedfleetVersion": last.get("fedfleet_version")},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"fedfleet": str(last.get("fedfleet_version"))},
                    **(
                        {
                            "builderDependencies": [
                                {"name": "aggregator image", "digest": _sha256(last["image_digest"])}
                            ]
                        }
                        if last.get("image_digest")
                        else {}
                    ),
                },
                "metadata": {
                    "invocationId": f"{last['training']}@{result.head}",
                    "startedOn": first.get("recorded"),
                    "finishedOn": last.get("finished") or last.get("recorded"),
                },
                "byproducts": [
                    {
                        "name": f"lineage/round-{record['round']:06d}",
                        "digest": _sha256(digest),
                        "annotations": {
                            "clients": len(record.get("clients") or []),
                            "epsilon": record.get("epsilon"),
                            "modelDigest": record["model_digest"],
                            "signer": signer,
                        },
                    }
                    for record, digest, signer in zip(records, result.digests, result.signers, strict=True)
                ],
            },
        },
    }


def model_card(result: Verified) -> str:
    records = result.records
    first, last = records[0], records[-1]
    base = first.get("base_model") or {}
    privacy = last.get("privacy") or {}
    secure = last.get("secure_aggregation") or {}
    signers = sorted({s for s in result.signers if s})
    contributors = _contributors(records)
    sites = max((int(r.get("site_count") or 0) for r in records[1:]), default=0)
    epsilon = last.get("epsilon")
    rows = [
        ("Training", last["training"]),
        ("Task", str(base.get("task"))),
        ("Base model", f"{base.get('source') or 'built by the task (seed ' + str(base.get('seed')) + ')'}"),
        ("Base model digest", base.get("digest") or "none (not pinned)"),
        ("Initial model digest", first["model_digest"]),
        ("Final model digest", last["model_digest"]),
        ("Training rounds", str(last["round"])),
        ("Sites (most in one round)", str(sites)),
        (f"Contributing clients ({last.get('client_identity')}s)", str(len(contributors))),
        ("Strategy", str((last.get("strategy") or {}).get("name"))),
        ("Secure aggregation", "SecAgg+" if secure.get("enabled") else "off"),
        ("Differential privacy", _privacy(privacy, epsilon)),
        ("Lineage head", result.head),
        ("Signed by", ", ".join(signers) or "unsigned"),
        ("fedfleet", str(last.get("fedfleet_version"))),
    ]
    table = "\n".join(
        f"| {name} | `{value}` |"
        if "digest" in name.lower() or name in ("Lineage head", "Signed by")
        else f"| {name} | {value} |"
        for name, value in rows
    )
    history = "\n".join(
        f"| {r['round']} | {len(r.get('clients') or [])} | {abbreviate(r['model_digest'])} | "
        f"{r.get('epsilon') if r.get('epsilon') is not None else '-'} |"
        for r in records[1:]
    )
    return (
        f"# Model card: {last['training']}\n\n"
        "Federated training run by fedfleet; every line below comes from the verified lineage chain\n"
        "(`fedfleet lineage verify`), not from the training's own report.\n\n"
        f"| | |\n|---|---|\n{table}\n\n"
        "## Rounds\n\n"
        f"| round | clients | model | epsilon |\n|---|---|---|---|\n{history}\n"
    )


def _privacy(privacy: dict[str, Any], epsilon: Any) -> str:
    if not privacy or not privacy.get("enabled"):
        return "off"
    parts = [f"{k}={v}" for k, v in sorted(privacy.items()) if k != "enabled" and v is not None]
    spent = f"; epsilon spent {epsilon:.4g}" if isinstance(epsilon, int | float) else ""
    return ", ".join(parts) + spent


def write_export(result: Verified, out_dir: Path) -> tuple[Path, Path]:
    """Write both files (each atomically); the chain must have verified."""
    if not result.ok or not result.records:
        raise ValueError("the lineage does not verify; nothing exported")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        (STATEMENT_FILE, json.dumps(statement(result), indent=2) + "\n"),
        (MODEL_CARD_FILE, model_card(result)),
    ):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / name)
        written.append(out_dir / name)
    return written[0], written[1]
