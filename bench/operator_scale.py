"""Operator at scale: the Kubernetes API requests the operator makes per running training, by
verb, idle (mid-round, nothing changing) and over a whole training, for 1 and for many
concurrent trainings, for this tree and for a baseline commit measured in the same run.

Each measurement is a fresh test API server (which records every request with the caller's
identity), a kubelet that only flips pod phases, the operator of the version under test as a
real process at its default one-second interval, and one stand-in aggregator per training
(bench/control_standin.py: rounds on a timer, no clients or model), served with the
certificate the operator issued. Prints JSON and a table.

    python bench/operator_scale.py [--trainings 1,100] [--rounds 10] [--idle-seconds 60]
                                   [--baseline REV] [--skip-baseline]
    python bench/operator_scale.py --fanout [--sites 100] [--clients 10]

`--fanout` instead measures one training with sites x clients pods: seconds from apply to all
pods Running, the operator's CPU seconds and peak RSS, on the test API server, with remote
sites through the site gateway (bench/remote_fanout.py: the same sites x clients, each site its
own agent and stream) and, when KUBEBUILDER_ASSETS names the `make kube-assets` folder, on the
real control plane (kube-apiserver, etcd, scheduler, controller-manager; the hub chart installed
by Helm and the operator under its ServiceAccount) in the same run (`--lanes` picks).

`--baseline` defaults to the parent of the commit that made the reconciler read watch-fed
indices (the first commit adding controller/observed.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from bench.control_standin import TimedRounds, serve  # noqa: E402
from bench.fanout_measure import phase_kubelet, until_running  # noqa: E402
from bench.remote_fanout import remote_fanout  # noqa: E402
from tests.controller.cluster import Cluster, site, start_operator, training_manifest, wait_for  # noqa: E402
from tests.dataplane.harness import free_port  # noqa: E402
from tests.kube.control_plane import HOW_TO_ENABLE, ControlPlane, assets  # noqa: E402
from tests.kube.fixtures import OPERATOR_TOKEN, ApiServerHandle, start_kubelet  # noqa: E402
from tests.kube.real_lane import NODES, RealLane  # noqa: E402

SITES = ["site-a", "site-b", "site-c"]
CLIENTS = [f"{s}-0" for s in SITES]
IDLE_ROUND_SECONDS = 1e9  # the round never ends while idle traffic is counted
WHOLE_ROUND_SECONDS = 1.0


def baseline_default() -> str:
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "operator/fedfleet/controller/observed.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        return "HEAD"
    return f"{added[-1]}~1"


def export(rev: str, into: Path) -> Path:
    """The operator package and CRDs of `rev`, as files (nothing installed)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "operator", "crds"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


class Standins:
    """One stand-in aggregator per training, on a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[Any] = []

    def start(self, port: int, secret: dict[str, Any], round_seconds: float) -> None:
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        rounds = TimedRounds(CLIENTS, round_seconds)
        server = asyncio.run_coroutine_threadsafe(
            serve(port, rounds, data["tls.crt"], data["tls.key"], data["ca.crt"]), self.loop
        ).result(30)
        self.servers.append(server)

    def close(self) -> None:
        for server in self.servers:
            asyncio.run_coroutine_threadsafe(server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def measure(
    source: Path, trainings: int, rounds: int, mode: str, idle_seconds: float, timeout: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        api = ApiServerHandle(root)
        for path in sorted((source / "crds").glob("*.yaml")):
            api.register_crd(yaml.safe_load(path.read_text()))
        time.sleep(0.2)
        cluster = Cluster(api.kubeconfig)
        for name in SITES:
            cluster.apply(site(name, capacity=trainings))
        kubelet = start_kubelet(api.kubeconfig, root / "kubelet", phase_only=True, interval=1.0)
        operator = start_operator(
            api.kubeconfig, root / "operator.log", interval=None, source=source, FEDFLEET_LOG_LEVEL="WARNING"
        )
        standins = Standins()
        round_seconds = IDLE_ROUND_SECONDS if mode == "idle" else WHOLE_ROUND_SECONDS
        ports = {f"t{i:03d}": free_port() for i in range(trainings)}
        try:
            started = time.monotonic()
            first = len(api.calls)
            for name, port in ports.items():
                cluster.apply(training_manifest(name, port, SITES, minClients=3, rounds=rounds))
            waiting = dict(ports)
            while waiting and time.monotonic() - started < timeout:
                secrets = {
                    s["metadata"]["name"]: s
                    for s in cluster.items(
                        "Secret", "default", selector="app.kubernetes.io/component=aggregator"
                    )
                }
                for name in [n for n in waiting if f"{n}-aggregator-tls" in secrets]:
                    standins.start(waiting.pop(name), secrets[f"{name}-aggregator-tls"], round_seconds)
                time.sleep(0.5)

            def statuses() -> list[dict[str, Any]]:
                return [t.get("status") or {} for t in cluster.items("FederatedTraining", "default")]

            if mode == "idle":
                wait_for(
                    lambda: all(s.get("currentRound") == 1 for s in statuses()),
                    timeout,
                    "every training mid-round 1",
                    interval=1.0,
                )
                time.sleep(5)  # pods Running, statuses written: from here nothing changes
                since, begin = len(api.calls), time.monotonic()
                time.sleep(idle_seconds)
                calls, seconds = api.calls[since:], time.monotonic() - begin
            else:
                wait_for(
                    lambda: all(s.get("phase") == "Succeeded" for s in statuses()),
                    timeout,
                    "every training Succeeded",
                    interval=1.0,
                )
                calls, seconds = api.calls[first:], time.monotonic() - started
        finally:
            operator.terminate()
            operator.wait(30)
            kubelet.stop()
            standins.close()
            api.close()
    mine = [c for c in calls if c.user == OPERATOR_TOKEN]
    verbs = Counter(c.verb for c in mine)
    resources = Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}" for c in mine)
    total = sum(verbs.values())
    return {
        "trainings": trainings,
        "mode": mode,
        "seconds": round(seconds, 1),
        "requests_per_training": round(total / trainings, 1),
        "per_minute_per_training": round(total / trainings / seconds * 60, 2),
        "per_minute_per_training_by_verb": {
            verb: round(n / trainings / seconds * 60, 2) for verb, n in sorted(verbs.items())
        },
        "requests_per_training_by_resource": {
            key: round(n / trainings, 1) for key, n in sorted(resources.items())
        },
    }


def fanout(lane: str, sites: int, clients: int, timeout: float) -> dict[str, Any]:
    """One training with sites x clients pods on `lane` ("test-server", or "real": the control
    plane from KUBEBUILDER_ASSETS with the hub chart installed by Helm and the operator under
    its ServiceAccount); the kubelet only flips phases, so the figures are the operator's and
    the control plane's, not the pods'."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        nodes = None
        if lane == "real":
            binaries = assets()
            if binaries is None:
                raise SystemExit(HOW_TO_ENABLE)
            real = RealLane(ControlPlane(binaries, root / "plane").start())
            stack.callback(real.close)
            real.install_hub()  # whole-cluster mode: the sites below live in `default`
            kubeconfig, nodes = real.kubeconfig, NODES
        else:
            api = ApiServerHandle(root)
            stack.callback(api.close)
            for path in sorted((REPO / "crds").glob("*.yaml")):
                api.register_crd(yaml.safe_load(path.read_text()))
            time.sleep(0.2)
            kubeconfig = api.kubeconfig
        cluster = Cluster(kubeconfig)
        names = [f"site-{i:03d}" for i in range(sites)]
        for name in names:
            cluster.apply(site(name, capacity=clients))
        kubelet = phase_kubelet(kubeconfig, root / "kubelet", nodes)
        stack.callback(kubelet.stop)
        operator = start_operator(
            kubeconfig, root / "operator.log", interval=None, FEDFLEET_LOG_LEVEL="WARNING"
        )
        stack.callback(operator.wait, 30)
        stack.callback(operator.terminate)
        expected = sites * clients + 1  # clients and the aggregator
        started = time.perf_counter()
        cluster.apply(
            training_manifest("scale", 50051, names, clientsPerSite=clients, minClients=sites * clients)
        )

        def running_now() -> int:
            pods = cluster.items("Pod", selector="fedfleet.io/training=scale")
            return sum((p.get("status") or {}).get("phase") == "Running" for p in pods)

        figures = until_running(operator.pid, running_now, expected, started, timeout)
    return {"lane": lane, "sites": sites, "clients_per_site": clients, **figures}


def print_fanout(results: list[dict[str, Any]]) -> None:
    print(json.dumps(results, indent=2))
    print(f"\n{'lane':<13}{'pods':>6}{'running':>9}{'seconds':>9}{'cpu s':>8}{'peak RSS MB':>13}")
    # remote: pods are client pods at the sites, Running as the sites' agents report them
    for r in results:
        print(
            f"{r['lane']:<13}{r['pods']:>6}{r['pods_running']:>9}{r['seconds_to_all_running']:>9}"
            f"{r['operator_cpu_seconds']:>8}{r['operator_peak_rss_mb']:>13}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trainings", default="1,100", help="comma-separated numbers of concurrent trainings"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--baseline", default=None, help="git revision to compare with")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--modes", default="idle,whole")
    parser.add_argument(
        "--fanout", action="store_true", help="one training's pods: time to Running, CPU, RSS"
    )
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument(
        "--lanes",
        default="",
        help="--fanout on: test-server,remote,real (default: all three; real when KUBEBUILDER_ASSETS is set)",
    )
    args = parser.parse_args()
    if args.fanout:
        lanes = (
            args.lanes.split(",")
            if args.lanes
            else ["test-server", "remote", *(["real"] if assets() else [])]
        )
        results = []
        for lane in lanes:
            if lane == "remote":
                results.append(remote_fanout(args.sites, args.clients, args.timeout))
            else:
                results.append(fanout(lane, args.sites, args.clients, args.timeout))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        print_fanout(results)
        return
    counts = [int(n) for n in args.trainings.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"this tree": REPO}
        if not args.skip_baseline:
            rev = args.baseline or baseline_default()
            commit = subprocess.run(
                ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
            versions[f"baseline {commit}"] = export(rev, Path(tmp) / "baseline")
        for count in counts:
            for mode in args.modes.split(","):
                for version, source in versions.items():
                    row = measure(source, count, args.rounds, mode, args.idle_seconds, args.timeout)
                    row["version"] = version
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    aggregator = "stand-in (bench/control_standin.py: rounds on a timer, no clients, no model)"
    print(json.dumps({"rounds": args.rounds, "aggregator": aggregator, "results": results}, indent=2))
    print(
        f"\n{'version':<18}{'trainings':>10}{'mode':>7}{'seconds':>9}{'req/training':>14}"
        f"{'req/min/training':>18}  by verb (/min/training)"
    )
    for r in results:
        verbs = " ".join(f"{v}={n}" for v, n in r["per_minute_per_training_by_verb"].items())
        print(
            f"{r['version']:<18}{r['trainings']:>10}{r['mode']:>7}{r['seconds']:>9}"
            f"{r['requests_per_training']:>14}{r['per_minute_per_training']:>18}  {verbs}"
        )
    print(f"aggregator: {aggregator}; whole = {args.rounds} rounds of {WHOLE_ROUND_SECONDS:.0f} s, 3 clients")


if __name__ == "__main__":
    main()
