"""Broken manifests through the real CLI: each exits 2 before anything starts, with one message
that names the file and the field (and the closest field when a key is mistyped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fedfleet.api.site import FederationSiteSpec
from fedfleet.cli import main
from pydantic import ValidationError

BASE: dict[str, Any] = {
    "task": {"name": "digits-mlp"},
    "rounds": 3,
    "sites": {"names": ["a", "b", "c", "d"]},
}
DP = {"enabled": True, "clipNorm": 1.0, "noiseMultiplier": 1.1}


def document(metadata: dict[str, Any] | None = None, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": metadata or {"name": "t"},
            "spec": BASE | spec,
        }
    )


# (case, manifest text, what the one message must say after "FILE: " or "FILE:LINE:COL: ")
CASES: list[tuple[str, str, str]] = [
    ("type: rounds not a number", document(rounds="many"), "spec.rounds: Input should be a valid integer"),
    (
        "range: rounds 0",
        document(rounds=0),
        "spec.rounds: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        "range: clientsPerSite 1001",
        document(clientsPerSite=1001),
        "spec.clientsPerSite: Input should be less than or equal to 1000 (got 1001)",
    ),
    (
        "enum: compression bits 12",
        document(compression={"bits": 12}),
        "spec.compression.bits: Input should be 32, 16, 8 or 4 (got 12)",
    ),
    (
        "mistyped: roundTimeoutSecs",
        document(roundTimeoutSecs=5),
        "spec.roundTimeoutSecs: Extra inputs are not permitted; did you mean roundTimeoutSeconds?",
    ),
    (
        "mistyped: secureAgregation",
        document(secureAgregation={"enabled": False}),
        "spec.secureAgregation: Extra inputs are not permitted; did you mean secureAggregation?",
    ),
    (
        "mistyped: clientPerSite",
        document(clientPerSite=2),
        "spec.clientPerSite: Extra inputs are not permitted; did you mean clientsPerSite or client?",
    ),
    (
        "mistyped nested: strategy.nme",
        document(strategy={"nme": "FedAvg"}),
        "spec.strategy.nme: Extra inputs are not permitted; did you mean name?",
    ),
    (
        "mistyped in the task config: localEpoch",
        document(task={"name": "digits-mlp", "config": {"localEpoch": 2}}),
        "spec.task.config.localEpoch: Extra inputs are not permitted; did you mean localEpochs?",
    ),
    (
        "unknown field: colour",
        document(colour="blue"),
        "spec.colour: Extra inputs are not permitted (got 'blue')",
    ),
    (
        "unknown strategy",
        document(strategy={"name": "FedMagic"}),
        "spec.strategy: unknown strategy 'FedMagic'; one of FedAdam, FedAvg, FedProx",
    ),
    (
        "YAML: unclosed flow sequence",
        "spec: [unclosed\n",
        "2:1: not valid YAML: while parsing a flow sequence",
    ),
    (
        "YAML: tab indentation",
        "apiVersion: fedfleet.io/v1alpha1\nspec:\n\trounds: 3\n",
        "3:1: not valid YAML: while scanning for the next token: found character '\\t'",
    ),
    (
        "YAML: a list, not a mapping",
        "- rounds: 3\n",
        "expected a mapping with apiVersion, kind, metadata and spec",
    ),
    (
        "wrong apiVersion",
        document().replace("fedfleet.io/v1alpha1", "fedfleet.io/v1"),
        "apiVersion: Input should be 'fedfleet.io/v1alpha1'",
    ),
    (
        "metadata.name not a DNS label",
        document(metadata={"name": "My_Training"}),
        "metadata.name: String should match pattern",
    ),
    (
        "digest not sha256",
        document(model={"digest": "md5:abc"}),
        "spec.model.digest: String should match pattern",
    ),
    (
        "semantic: minClients above the clients",
        document(minClients=5),
        "spec.minClients: 5 is more than the 4 clients the sites run",
    ),
    (
        "semantic: SecAgg+ with 2 clients",
        document(sites={"names": ["a", "b"]}),
        "spec.secureAggregation: needs at least 3 clients, the sites run 2",
    ),
    (
        "semantic: distributed DP without SecAgg+",
        document(privacy=DP | {"mode": "distributed"}, secureAggregation={"enabled": False}),
        "spec.privacy.mode: distributed noise needs spec.secureAggregation.enabled",
    ),
    (
        "semantic: DP enabled without clipNorm",
        document(privacy={"enabled": True, "noiseMultiplier": 1.0}),
        "spec.privacy: privacy is enabled: set clipNorm",
    ),
    (
        "semantic: DP budget allowing zero rounds",
        document(privacy=DP | {"epsilonBudget": 0.05}),
        "spec.privacy.epsilonBudget: 0.05 allows no round: one round at noiseMultiplier 1.1 and "
        "sampling rate 1 already costs epsilon 4.24",
    ),
    (
        "task config out of range",
        document(task={"name": "digits-mlp", "config": {"localEpochs": 0}}),
        "spec.task.config.localEpochs: Input should be greater than or equal to 1",
    ),
    (
        "local run with a site selector",
        document(sites={"selector": {"matchLabels": {"tier": "gpu"}}}),
        "spec.sites: a local run needs site names (label selectors need a cluster)",
    ),
]


@pytest.mark.parametrize(("case", "text", "message"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["local run", "plan"])
def test_broken_manifest_exits_2_naming_file_and_field(
    case: str, text: str, message: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.startswith("local run") and command == "plan":
        pytest.skip("a cluster resolves selectors: plan accepts them")
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    extra = ["--out", str(out), "--no-progress"] if command == "local run" else []
    code = main([*command.split(), str(path), *extra])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert message in stderr
    assert f"{path}: " in stderr or f"{path}:" in stderr.split(message)[0]
    assert "<unicode string>" not in stderr and "logs" not in stderr
    assert not out.exists()  # nothing started, nothing written


def test_a_missing_manifest_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(tmp_path / "nowhere.yaml")]) == 2
    assert f"{tmp_path / 'nowhere.yaml'}: cannot read manifest" in capsys.readouterr().err


def test_a_site_field_nothing_implements_is_refused() -> None:
    with pytest.raises(ValidationError, match="identitySecret"):
        FederationSiteSpec.model_validate({"identitySecret": "site-a-tls"})
