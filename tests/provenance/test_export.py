"""`fedfleet lineage export`: an in-toto statement naming the final model by its sha256, a model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fedfleet.cli import main

from tests.provenance.chain import ROUNDS, Chain


def test_export_writes_a_statement_for_the_final_model_and_a_model_card(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert (
        main(["lineage", "export", str(chain.state), "--out", str(out), "--public-key", str(chain.key)]) == 0
    )
    statement = json.loads((out / "provenance.intoto.json").read_text())
    final = chain.state / "rounds" / f"round-{ROUNDS:06d}" / "model.safetensors"
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    (subject,) = statement["subject"]
    assert subject["digest"] == {"sha256": hashlib.sha256(final.read_bytes()).hexdigest()}
    assert subject["name"].endswith(f"round-{ROUNDS:06d}/model.safetensors")
    predicate = statement["predicate"]
    assert predicate["buildDefinition"]["externalParameters"]["rounds"] == ROUNDS
    records = [
        json.loads((chain.state / "rounds" / f"round-{n:06d}" / "lineage.json").read_text())
        for n in range(ROUNDS + 1)
    ]
    byproducts = predicate["runDetails"]["byproducts"]
    assert [b["digest"]["sha256"] for b in byproducts] == [
        r["digest"].removeprefix("sha256:") for r in records
    ]
    assert predicate["runDetails"]["metadata"]["invocationId"].endswith(chain.status.lineage_head)

    card = (out / "MODEL_CARD.md").read_text()
    assert f"| Training rounds | {ROUNDS} |" in card
    assert "| Sites (most in one round) | 3 |" in card
    assert f"| Final model digest | `{chain.status.model_digest}` |" in card
    assert "| Differential privacy | off |" in card and "| Secure aggregation | off |" in card


def test_a_chain_that_does_not_verify_is_not_exported(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (chain.state / "rounds" / "round-000001" / "lineage.json").unlink()
    out = tmp_path / "export"
    assert main(["lineage", "export", str(chain.state), "--out", str(out)]) == 1
    assert "round 1: lineage.json: missing" in capsys.readouterr().err
    assert not out.exists()
