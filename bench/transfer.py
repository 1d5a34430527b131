"""Update streaming: throughput and aggregator peak memory, with real processes over loopback gRPC.

Scenarios (a fresh aggregator each, so its peak RSS belongs to one scenario):
  * one client streams one update of 1 GiB (4 GiB with --big);
  * 1, 10 and 50 clients each stream a 100 MB update into the same round.
Aggregator peak RSS must not grow with the number of clients beyond a constant: the sum is
O(model) and uploads are staged in a fixed number of reusable buffers.

    python bench/transfer.py [--big] [--quick] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import yaml
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO))

from fedfleet.chunks import GRPC_OPTIONS  # noqa: E402
from fedfleet.v1 import aggregator_pb2 as pb  # noqa: E402
from fedfleet.v1 import aggregator_pb2_grpc as pb_grpc  # noqa: E402

from tests.dataplane.harness import free_port, wait_healthy  # noqa: E402

MB = 1_000_000
WORKER = r"""
import json, sys, time, numpy as np, grpc
from fedfleet.chunks import GRPC_OPTIONS, iter_chunks
from fedfleet.v1 import aggregator_pb2 as pb, aggregator_pb2_grpc as pb_grpc
address, training, tensors, elements = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
clients = sys.argv[5:]
update = {f"t{i:03d}": np.full(elements, 1e-3 * (i + 1), dtype=np.float32) for i in range(tensors)}
stub = pb_grpc.AggregatorStub(grpc.insecure_channel(address, options=GRPC_OPTIONS))
replies = [stub.JoinRound(pb.JoinRequest(training=training, client_id=c, session=c, wait_seconds=30))
           for c in clients]
started = time.time()
for client, reply in zip(clients, replies):
    assert reply.action == pb.JoinReply.ACTION_TRAIN, reply
    header = pb.UpdateHeader(training=training, client_id=client, round=reply.round, num_examples=1,
                             base_version=reply.model_version, session=client)
    def messages():
        yield pb.UpdateMessage(header=header)
        for chunk in iter_chunks(update):
            yield pb.UpdateMessage(chunk=chunk)
    stub.UploadUpdate(messages())
print(json.dumps({"started": started, "ended": time.time()}))
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def scenario(workdir: Path, model_bytes: int, clients: int, workers: int) -> dict[str, float]:
    """One round: `clients` updates of `model_bytes` each, sent by `workers` client processes."""
    tensors = max(1, model_bytes // (64 * MB))
    elements = model_bytes // 4 // tensors
    weights = {f"t{i:03d}": np.zeros(elements, dtype=np.float32) for i in range(tensors)}
    model_path = workdir / "model.safetensors"
    save_file(weights, str(model_path))
    del weights
    manifest = workdir / "bench.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "fedfleet.io/v1alpha1",
                "kind": "FederatedTraining",
                "metadata": {"name": "bench"},
                "spec": {
                    "task": {"name": "digits-mlp"},
                    "model": {"source": str(model_path)},
                    "rounds": 1,
                    "sites": {"names": [f"s{i}" for i in range(clients)]},
                    "roundTimeoutSeconds": 3600,
                    "secureAggregation": {"enabled": False},
                },
            }
        )
    )
    port = free_port()
    env = os.environ | {"FEDFLEET_LOG_FORMAT": "json", "PYTHONPATH": str(REPO / "operator")}
    state = Path(tempfile.mkdtemp(dir=workdir))
    aggregator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedfleet",
            "aggregator",
            "--manifest",
            str(manifest),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--insecure-local",  # loopback, as in a local run: the bench measures transfer alone
        ],
        stdout=subprocess.DEVNULL,
        env=env,
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_healthy(address, timeout=300)
        idle_rss = peak_rss_mb(aggregator.pid)
        ids = [f"c{i:03d}" for i in range(clients)]
        control = pb_grpc.ControlStub(grpc.insecure_channel(address, options=GRPC_OPTIONS))
        control.StartRound(
            pb.StartRoundRequest(
                round=1, kind=pb.ROUND_KIND_TRAIN, participants=ids, timeout_seconds=3600, min_clients=clients
            )
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, address, "bench", str(tensors), str(elements), *group],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for group in (ids[w::workers] for w in range(workers))
            if group
        ]
        spans = []
        for proc in procs:
            output, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError("a bench client failed")
            spans.append(json.loads(output.strip().splitlines()[-1]))
        final = list(control.WatchRound(pb.WatchRequest(round=1)))[-1]
        seconds = max(s["ended"] for s in spans) - min(s["started"] for s in spans)
        assert final.phase == pb.ROUND_PHASE_SUCCEEDED, final
        sent = clients * tensors * elements * 4
        return {
            "clients": clients,
            "update_mb": round(tensors * elements * 4 / MB, 1),
            "client_processes": len(procs),
            "seconds": round(seconds, 2),
            "throughput_gb_s": round(sent / seconds / 1e9, 3),
            "aggregator_idle_rss_mb": round(idle_rss, 1),
            "aggregator_peak_rss_mb": round(peak_rss_mb(aggregator.pid), 1),
            "peak_rss_over_model": round(peak_rss_mb(aggregator.pid) * 2**20 / (tensors * elements * 4), 2),
        }
    finally:
        aggregator.terminate()
        aggregator.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", action="store_true", help="also stream one 4 GiB update")
    parser.add_argument("--quick", action="store_true", help="10 MB updates and 1/10 clients (smoke run)")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    big_sizes = [] if args.quick else [2**30] + ([4 * 2**30] if args.big else [])
    per_client = 10 * MB if args.quick else 100 * MB
    fleet = [1, 10] if args.quick else [1, 10, 50]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in big_sizes:
            results.append({"scenario": f"one {size // 2**30} GiB update"} | scenario(Path(tmp), size, 1, 1))
        for clients in fleet:
            results.append(
                {"scenario": f"{clients} x {per_client // MB} MB"}
                | scenario(Path(tmp), per_client, clients, min(clients, 2))
            )
    fleet_rows = [r for r in results if "x" in r["scenario"]]
    summary = {
        "peak_rss_growth_most_vs_fewest_clients": round(
            fleet_rows[-1]["aggregator_peak_rss_mb"] / fleet_rows[0]["aggregator_peak_rss_mb"], 2
        )
    }
    print(json.dumps({"results": results, "summary": summary}, indent=2))
    if not args.json_only:
        columns = ("seconds", 9), ("GB/s", 8), ("idle RSS MB", 13), ("peak RSS MB", 13), ("peak/model", 12)
        header = f"{'scenario':<22}" + "".join(f"{name:>{width}}" for name, width in columns)
        print("\n" + header)
        for r in results:
            print(
                f"{r['scenario']:<22}{r['seconds']:>9}{r['throughput_gb_s']:>8}{r['aggregator_idle_rss_mb']:>13}"
                f"{r['aggregator_peak_rss_mb']:>13}{r['peak_rss_over_model']:>12}"
            )
        print(
            f"\npeak RSS with {fleet_rows[-1]['clients']} clients / with {fleet_rows[0]['clients']}: "
            f"{summary['peak_rss_growth_most_vs_fewest_clients']}x"
        )


if __name__ == "__main__":
    main()
