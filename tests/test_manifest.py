"""Manifests: the shipped examples load, and every malformed one names the field at fault."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedfleet.api import ManifestError, load_training, parse_training
from fedfleet.tasks import TaskError, load_task

REPO = Path(__file__).resolve().parents[1]


def manifest(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"task": {"name": "digits-mlp"}, "rounds": 3, "sites": {"names": ["a", "b"]}}
    return {
        "apiVersion": "fedfleet.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": "t"},
        "spec": base | spec,
    }


TRAININGS = sorted(
    p for p in (REPO / "examples").glob("*.yaml") if "kind: FederatedTraining" in p.read_text()
)


@pytest.mark.parametrize("path", TRAININGS, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    training = load_training(path)
    assert training.spec.rounds >= 1


def test_defaults_are_filled() -> None:
    spec = parse_training(manifest()).spec
    assert spec.strategy.name == "FedAvg" and spec.clients_per_site == 1 and spec.retry.max_attempts == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rounds": 0}, "spec.rounds: Input should be greater than or equal to 1 (got 0)"),
        ({"rounds": "many"}, "spec.rounds: Input should be a valid integer"),
        ({"minClients": 0}, "spec.minClients: Input should be greater than or equal to 1"),
        (
            {"strategy": {"name": "FedMagic"}},
            "spec.strategy: unknown strategy 'FedMagic'; one of FedAdam, FedAvg",
        ),
        ({"strategy": {"name": "FedAvg", "lr": 1}}, "spec.strategy.lr: Extra inputs are not permitted"),
        ({"roundTimeoutSecs": 5}, "spec.roundTimeoutSecs: Extra inputs are not permitted"),
        ({"sites": {"names": []}}, "spec.sites: give exactly one of names or selector"),
        ({"sites": {"names": ["a", "a"]}}, "spec.sites: site names must be unique"),
        ({"model": {"digest": "md5:abc"}}, "spec.model.digest: String should match pattern"),
        (
            {"retry": {"maxAttempts": -1}},
            "spec.retry.maxAttempts: Input should be greater than or equal to 1",
        ),
        # the review's cases: each used to pass validation and fail later, far from the cause
        (
            {"secureAggregation": {"clipRange": float("inf")}},
            "spec.secureAggregation.clipRange: Input should",
        ),
        (
            {"secureAggregation": {"clipRange": float("nan")}},
            "spec.secureAggregation.clipRange: Input should",
        ),
        (
            {"secureAggregation": {"clipRange": 1e-300}},
            "spec.secureAggregation.clipRange: Input should be greater than or equal to 0.000001",
        ),
        (
            {"secureAggregation": {"maxWeight": 1e300}},
            "spec.secureAggregation.maxWeight: Input should be less than or equal to 1000000000",
        ),
        ({"sites": {"names": ["Site_A"]}}, "spec.sites.names[0]: String should match pattern"),
        ({"sites": {"names": ["a" * 70]}}, "spec.sites.names[0]: String should have at most 63 characters"),
    ],
)
def test_malformed_manifests_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_training(manifest(**spec), "m.yaml")
    assert f"m.yaml: {message}" in str(err.value)


def test_missing_spec_fields_and_wrong_kind() -> None:
    document = manifest()
    del document["spec"]["rounds"]
    document["kind"] = "Deployment"
    with pytest.raises(ManifestError) as err:
        parse_training(document, "m.yaml")
    assert "m.yaml: kind: Input should be 'FederatedTraining'" in str(err.value)
    assert "m.yaml: spec.rounds: Field required" in str(err.value)


def test_semantic_errors_name_the_field() -> None:
    spec = parse_training(manifest(minClients=3)).spec
    assert spec.semantic_errors() == [
        "spec.minClients: 3 is more than the 2 clients the sites run",
        "spec.secureAggregation: needs at least 3 clients, the sites run 2; "
        "disable it for smaller federations",
    ]


def test_task_config_errors_name_the_field() -> None:
    training = parse_training(
        manifest(task={"name": "digits-mlp", "config": {"localEpochs": 0, "colour": 1}})
    )
    with pytest.raises(TaskError) as err:
        load_task(training.spec.task)
    assert "spec.task.config.localEpochs: Input should be greater than or equal to 1" in str(err.value)
    assert "spec.task.config.colour: Extra inputs are not permitted" in str(err.value)
    with pytest.raises(TaskError, match=r"spec\.task\.name: cannot load 'nowhere\.mod:Task'"):
        load_task(parse_training(manifest(task={"name": "nowhere.mod:Task"})).spec.task)


def test_cli_reports_a_bad_manifest_in_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest(rounds=-2)))
    run = subprocess.run(
        [sys.executable, "-m", "fedfleet", "local", "run", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert (
        f"fedfleet: invalid manifest: {bad}: spec.rounds: Input should be greater than or equal to 1"
        in run.stderr
    )
    (tmp_path / "broken.yaml").write_text("spec: [unclosed")
    run = subprocess.run(
        [sys.executable, "-m", "fedfleet", "local", "run", str(tmp_path / "broken.yaml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "not valid YAML" in run.stderr


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    text = yaml.safe_dump(manifest()) + "spec:\n  rounds: 1\n"  # a second spec: silently the winner before
    with pytest.raises(ManifestError, match=r"m\.yaml:\d+:1: not valid YAML: .*duplicate key 'spec'"):
        load_training(write(tmp_path, text))
    nested = "apiVersion: fedfleet.io/v1alpha1\nkind: FederatedTraining\nmetadata: {name: t}\n"
    nested += "spec:\n  rounds: 3\n  rounds: 300\n  task: {name: digits-mlp}\n  sites: {names: [a, b]}\n"
    with pytest.raises(ManifestError, match=r"m\.yaml:6:3: not valid YAML: .*duplicate key 'rounds'"):
        load_training(write(tmp_path, nested))


def test_an_alias_bomb_is_refused_without_echoing_it(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\napiVersion: fedfleet.io/v1alpha1\nkind: FederatedTraining\nspec: *a8\n"
    with pytest.raises(ManifestError) as err:
        load_training(write(tmp_path, bomb))
    assert "alias bomb" in str(err.value) and "lol" not in str(err.value)
    assert len(str(err.value)) < 300
    # a few aliases, as hand-written manifests use them, still load
    fine = yaml.safe_dump(manifest()) + "x-sites: &s [a, b]\n"
    assert load_training(write(tmp_path, fine)).spec.rounds == 3


def test_a_huge_value_is_never_echoed_whole(tmp_path: Path) -> None:
    huge = manifest(rounds="9" * 100_000)
    with pytest.raises(ManifestError) as err:
        parse_training(huge, "m.yaml")
    assert "spec.rounds" in str(err.value) and len(str(err.value)) < 300
    (tmp_path / "big.yaml").write_bytes(b"#" * (2 << 20))
    with pytest.raises(ManifestError, match="larger than 1048576 bytes"):
        load_training(tmp_path / "big.yaml")


def test_concurrent_task_checks_each_get_their_own_answer() -> None:
    """A hundred trainings admitted at once share a few check processes; each still gets the
    answer for its own config (the refusal naming the field, or none)."""
    from fedfleet.controller.task_check import task_config_error

    bad = parse_training(manifest(task={"name": "digits-mlp", "config": {"localEpochs": 0}})).spec.task
    good = parse_training(manifest()).spec.task

    async def ask() -> list[str | None]:
        return list(await asyncio.gather(*(task_config_error(t) for t in [bad, good] * 6)))

    answers = asyncio.run(ask())
    assert answers[1::2] == [None] * 6
    assert all(a is not None and "spec.task.config.localEpochs" in a for a in answers[::2])
    assert asyncio.run(task_config_error(bad)) == answers[0]  # asked again in another loop
