"""Operator at scale: one training, 100 sites x 10 clients, against the test API server with a
kubelet that only flips pod phases (no processes). Prints JSON and a table: time from apply to
all pods Running, the operator's CPU seconds and peak RSS.

    python bench/operator_scale.py [--sites 100] [--clients 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from tests.controller.cluster import Cluster, site, start_operator, training_manifest  # noqa: E402
from tests.kube.fixtures import ApiServerHandle, load_crds, start_kubelet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        api = ApiServerHandle(root)
        for crd in load_crds():
            api.register_crd(crd)
        time.sleep(0.2)
        cluster = Cluster(api.kubeconfig)
        names = [f"site-{i:03d}" for i in range(args.sites)]
        for name in names:
            cluster.apply(site(name, capacity=args.clients))
        kubelet = start_kubelet(api.kubeconfig, root / "kubelet", phase_only=True, interval=2.0)
        operator = start_operator(api.kubeconfig, root / "operator.log", interval=1.0)
        watched = psutil.Process(operator.pid)
        expected = args.sites * args.clients + 1  # clients and the aggregator
        try:
            started = time.perf_counter()
            cluster.apply(
                training_manifest(
                    "scale", 50051, names, clientsPerSite=args.clients, minClients=args.sites * args.clients
                )
            )
            running = 0
            while time.perf_counter() - started < args.timeout:
                pods = cluster.items("Pod", selector="fedfleet.io/training=scale")
                running = sum((p.get("status") or {}).get("phase") == "Running" for p in pods)
                if running >= expected:
                    break
                time.sleep(2.0)
            seconds = time.perf_counter() - started
            cpu = watched.cpu_times()
            peak_kb = next(
                int(line.split()[1])
                for line in Path(f"/proc/{operator.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            )
        finally:
            operator.terminate()
            operator.wait(30)
            kubelet.stop()
            api.close()
    result = {
        "sites": args.sites,
        "clients_per_site": args.clients,
        "pods": expected,
        "pods_running": running,
        "seconds_to_all_running": round(seconds, 2),
        "operator_cpu_seconds": round(cpu.user + cpu.system, 2),
        "operator_peak_rss_mb": round(peak_kb / 1024, 1),
    }
    print(json.dumps(result, indent=2))
    print(f"\n{'pods':>6}{'running':>9}{'seconds':>9}{'cpu s':>8}{'peak RSS MB':>13}")
    print(
        f"{expected:>6}{running:>9}{result['seconds_to_all_running']:>9}{result['operator_cpu_seconds']:>8}"
        f"{result['operator_peak_rss_mb']:>13}"
    )


if __name__ == "__main__":
    main()
