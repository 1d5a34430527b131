"""A re-run into the same --out resumes the same training or is refused: a changed spec never
continues old checkpoints silently, and a forced one that crashes the clients says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.dataplane.harness import write_manifest

RETRY_ONCE = {"maxAttempts": 1, "backoffSeconds": 0, "maxRoundAttempts": 1}


def local_run(manifest: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfleet", "local", "run", str(manifest), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ | {"FEDFLEET_LOG_FORMAT": "json"},
    )


def rounds_in(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "state" / "rounds").glob("round-*"))


def test_resume_with_a_changed_spec_is_refused_and_forced_failure_names_the_cause(tmp_path: Path) -> None:
    out = tmp_path / "out"  # every run: --no-progress is implied (stderr is not a terminal)
    task = {"name": "digits-mlp", "config": {"hidden": 8, "localEpochs": 1}}
    first = write_manifest(tmp_path / "a.yaml", rounds=1, task=task, retry=RETRY_ONCE)
    done = local_run(first, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert rounds_in(out) == ["round-000000", "round-000001"]
    assert json.loads((out / "spec.json").read_text())["digest"].startswith("sha256:")

    # another model shape into the same folder: refused before anything starts, nothing touched
    wider = {"name": "digits-mlp", "config": {"hidden": 16, "localEpochs": 1}}
    changed = write_manifest(tmp_path / "b.yaml", rounds=2, task=wider, retry=RETRY_ONCE)
    refused = local_run(changed, out)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"{out} holds 1 rounds of a run made with another spec" in refused.stderr
    assert "changed: spec.task.config.hidden;" in refused.stderr and "--force" in refused.stderr
    assert rounds_in(out) == ["round-000000", "round-000001"]

    # forced: the clients cannot load the old model; the one-line failure carries their error
    forced = local_run(changed, out, "--force")
    assert forced.returncode == 1, forced.stderr[-3000:]
    failure = next(
        line for line in forced.stderr.splitlines() if line.startswith("fedfleet: training failed")
    )
    assert "resuming at round 2 of 2" in forced.stderr
    assert "RuntimeError: Error(s) in loading state_dict" in failure and "size mismatch" in failure
    assert f"(logs: {out / 'logs'})" in failure
