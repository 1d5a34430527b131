"""`fedfleet local run` end to end: real aggregator and client processes over loopback gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc
from safetensors.numpy import load_file

from tests.dataplane.harness import write_manifest

SLOW_TASK = {"name": "digits-mlp", "config": {"hidden": 16, "localEpochs": 60}}


def local_run(manifest: Path, out: Path) -> subprocess.Popen[str]:
    env = os.environ | {"FEDFLEET_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "fedfleet", "local", "run", str(manifest), "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def finish(run: subprocess.Popen[str], timeout: float = 240) -> str:
    output, _ = run.communicate(timeout=timeout)
    assert run.returncode == 0, output[-3000:]
    return output


def wait_for(condition: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            if result := condition():
                return result
        except (OSError, ValueError, KeyError, grpc.RpcError):
            pass
        time.sleep(0.05)
    raise TimeoutError(what)


def control_channel(table: dict[str, Any]) -> grpc.Channel:
    """As the run's controller: local runs are mTLS, the runner's identity is in OUT/tls/controller."""
    # The aggregator may still be starting: retry the connection every second at most, not
    # gRPC's default backoff of up to two minutes.
    quick = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
    if not table.get("tls"):
        return grpc.insecure_channel(table["address"], options=quick)
    own = Path(table["tls"]) / "controller"
    creds = grpc.ssl_channel_credentials(
        (own / "ca.crt").read_bytes(), (own / "tls.key").read_bytes(), (own / "tls.crt").read_bytes()
    )
    return grpc.secure_channel(
        table["address"], creds, options=[*quick, ("grpc.ssl_target_name_override", table["serverName"])]
    )


class RunningFederation:
    """Reads a running local federation's process table and aggregator status."""

    def __init__(self, out: Path) -> None:
        self.table = wait_for(lambda: json.loads((out / "processes.json").read_text()), what="processes.json")
        self.channel = control_channel(self.table)
        self.control = pb_grpc.ControlStub(self.channel)

    def wait_until_training(self, run: subprocess.Popen[str], number: int, client: str) -> None:
        """Returns once `client` trains in round `number`, as the aggregator pushes each change
        (WatchRound): a poll could miss a client that trains for well under a second."""
        watch = self.control.WatchRound(pb.WatchRequest(round=number), timeout=180, wait_for_ready=True)
        last = None
        try:
            for last in watch:
                states = {c.client_id: c.state for c in last.clients}
                if last.phase == pb.ROUND_PHASE_TRAINING and states.get(client) == "training":
                    return
            seen = f"round {number} ended before {client} trained in it: {last}"
        except grpc.RpcError as err:
            seen = f"watching round {number}: {err.code().name}"
        finally:
            watch.cancel()
        run.terminate()  # the run stops its processes too
        raise AssertionError(f"{seen}\nthe run's output:\n{run.communicate()[0][-3000:]}")

    def pids(self, out: Path) -> dict[str, int]:
        """The processes running now, by name (a restarted one has a new pid)."""
        table = json.loads((out / "processes.json").read_text())
        return {name: int(pid) for name, pid in table["pids"].items()}

    def pid(self, out: Path, name: str) -> int:
        return self.pids(out)[name]


def test_a_local_run_trains_with_secure_aggregation_as_well_as_without(tmp_path: Path) -> None:
    """The full run writes its results; SecAgg+ (on by default) matches plain aggregation's accuracy."""
    task = {"name": "digits-mlp", "config": {"alpha": 1.0, "localEpochs": 3}}
    final = {}
    for mode, enabled in (("secure", True), ("plain", False)):
        manifest = write_manifest(
            tmp_path / f"{mode}.yaml",
            name=mode,
            rounds=4,
            minClients=3,
            task=task,
            secureAggregation={"enabled": enabled},
            tls={"enabled": enabled},  # local runs are mTLS unless opted out (then: loopback only)
        )
        output = finish(local_run(manifest, tmp_path / mode))
        metrics = json.loads((tmp_path / mode / "metrics.json").read_text())
        rounds = metrics["rounds"]
        assert [r["round"] for r in rounds] == [1, 2, 3, 4]
        assert all(r["clients"] == "3/3" for r in rounds)
        accuracies = [r["eval_accuracy"] for r in rounds]
        assert accuracies[-1] > 0.8 and accuracies[-1] > accuracies[0], accuracies
        assert rounds[-1]["train_loss"] < rounds[0]["train_loss"]
        assert (tmp_path / mode / "metrics.png").read_bytes()[:4] == b"\x89PNG"
        assert metrics["final"]["model_digest"] in output
        sites = metrics["sites"]  # each site's figures, as the aggregator counted them
        assert sorted(sites) == ["site-a", "site-b", "site-c"]
        assert all(s["updatesAccepted"] == 4 and s["updatesRefused"] == 0 for s in sites.values()), sites
        assert sum(s["bytesReceived"] for s in sites.values()) == sum(r["bytes"] for r in rounds)
        assert all(s["bytesSent"] > 0 and s["clientSeconds"] > 0 for s in sites.values()), sites
        assert "client-seconds" in output  # the per-site table
        assert sorted(p.name for p in (tmp_path / mode / "state" / "rounds").iterdir()) == [
            f"round-{n:06d}" for n in range(5)
        ]
        uploads = (tmp_path / mode / "logs" / "site-a-0.log").read_text().splitlines()
        assert [json.loads(line)["masked"] for line in uploads if '"update.uploaded"' in line] == [
            enabled
        ] * 4
        aggregator_log = (tmp_path / mode / "logs" / "aggregator.log").read_text()
        assert ('"mtls": true' in aggregator_log) == enabled
        assert ('"transport.plaintext"' in aggregator_log) != enabled
        assert ("loopback only" in aggregator_log) != enabled
        final[mode] = accuracies[-1]
    assert abs(final["secure"] - final["plain"]) <= 0.01, final


def test_a_failing_manifest_exits_nonzero_with_a_one_line_reason(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "bad.yaml", minClients=5)
    run = local_run(manifest, tmp_path / "out")
    output = finish_failed(run)
    assert "spec.minClients: 5 is more than the 3 clients the sites run" in output


def test_a_local_run_refuses_spec_suspend_instead_of_ignoring_it(tmp_path: Path) -> None:
    run = local_run(write_manifest(tmp_path / "paused.yaml", suspend=True), tmp_path / "out")
    assert "spec.suspend: a local run does not suspend" in finish_failed(run)


def finish_failed(run: subprocess.Popen[str]) -> str:
    output, _ = run.communicate(timeout=60)
    assert run.returncode != 0
    return output


def test_a_client_killed_mid_round_is_dropped_then_rejoins_the_next_round(tmp_path: Path) -> None:
    four = {
        "names": ["site-a", "site-b", "site-c", "site-d"]
    }  # SecAgg+ with 4 (k=3, t=2) survives one dropout
    manifest = write_manifest(
        tmp_path / "m.yaml",
        rounds=3,
        sites=four,
        minClients=3,
        task=SLOW_TASK,
        retry={"maxAttempts": 3, "backoffSeconds": 0.5},
    )
    out = tmp_path / "out"
    run = local_run(manifest, out)
    federation = RunningFederation(out)
    federation.wait_until_training(run, 2, "site-b-0")
    victim = federation.pid(out, "site-b-0")
    os.kill(victim, signal.SIGKILL)
    finish(run)
    rounds = {r["round"]: r for r in json.loads((out / "metrics.json").read_text())["rounds"]}
    assert rounds[2]["clients"] == "3/4" and rounds[2]["dropped"] == ["site-b-0"]
    assert rounds[3]["clients"] == "4/4", ("the restarted client rejoins the next round", rounds[3])
    accepted = {
        site: s["updatesAccepted"]
        for site, s in json.loads((out / "metrics.json").read_text())["sites"].items()
    }
    assert accepted == {"site-a": 3, "site-b": 2, "site-c": 3, "site-d": 3}  # site-b's killed round: none
    restarted = [
        json.loads(line)
        for line in (out / "logs" / "site-b-0.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert sum(e["event"] == "client.started" for e in restarted) == 2
    assert federation.pid(out, "site-b-0") != victim


def alive(pid: int) -> bool:
    """Running, and not a zombie: an orphan's exit is reaped by whatever adopted it, if at all."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # the state follows the command's name


def test_a_run_stopped_by_sigterm_stops_every_process_it_started_and_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    """`kill`, `timeout` or a closed terminal: no aggregator or client is left running on its own."""
    manifest = write_manifest(tmp_path / "m.yaml", rounds=3, minClients=3, task=SLOW_TASK)
    out = tmp_path / "out"
    run = local_run(manifest, out)
    federation = RunningFederation(out)
    federation.wait_until_training(run, 2, "site-a-0")
    started = federation.pids(out).values()
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM; its processes are stopped; run it again to resume" in output
    assert not [pid for pid in started if alive(pid)]

    output = finish(local_run(manifest, out))
    assert "resuming at round 2 of 3" in output
    assert [r["round"] for r in json.loads((out / "metrics.json").read_text())["rounds"]] == [1, 2, 3]


def test_a_run_killed_outright_leaves_no_process_of_it_running(tmp_path: Path) -> None:
    """SIGKILL or the OOM killer, which no handler of the run sees: its processes stop themselves."""
    manifest = write_manifest(tmp_path / "m.yaml", rounds=2, minClients=3, task=SLOW_TASK)
    out = tmp_path / "out"
    run = local_run(manifest, out)
    federation = RunningFederation(out)
    federation.wait_until_training(run, 1, "site-a-0")
    started = federation.pids(out)
    run.kill()
    run.communicate(timeout=30)
    try:
        wait_for(lambda: not any(alive(pid) for pid in started.values()), timeout=60)
    except TimeoutError:
        running = sorted(name for name, pid in started.items() if alive(pid))
        for name in running:
            os.kill(started[name], signal.SIGKILL)
        raise AssertionError(f"still running 60 s after the run was killed: {running}") from None
    assert all("lifeline.cut" in (out / "logs" / f"{name}.log").read_text() for name in started)


def final_model(out: Path) -> dict[str, np.ndarray]:
    latest = sorted((out / "state" / "rounds").iterdir())[-1]
    return load_file(str(latest / "model.safetensors"))


def test_the_aggregator_killed_mid_round_resumes_and_ends_with_the_same_model(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", rounds=3, minClients=3, task=SLOW_TASK)
    calm, crashed = tmp_path / "calm", tmp_path / "crashed"
    finish(local_run(manifest, calm))

    run = local_run(manifest, crashed)
    federation = RunningFederation(crashed)
    federation.wait_until_training(run, 2, "site-a-0")
    first_aggregator = federation.pid(crashed, "aggregator")
    os.kill(first_aggregator, signal.SIGKILL)
    finish(run)

    events = [
        json.loads(line)
        for line in (crashed / "logs" / "aggregator.log").read_text().splitlines()
        if line.startswith("{")
    ]
    starts = [e for e in events if e["event"] == "engine.ready"]
    assert [s["model_version"] for s in starts] == [0, 1], "resumed at the last completed round"
    closed = [
        e["round"]
        for e in events
        if e["event"] == "round.closed" and e["kind"] == "train" and e["phase"] == "Succeeded"
    ]
    assert closed == [1, 2, 3], "no completed round repeated or skipped"
    a, b = final_model(calm), final_model(crashed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)
