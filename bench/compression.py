"""Compressed updates: bytes on the wire per round and final digits accuracy, by bit width.

Real `fedfleet local run` subprocesses of examples/digits.yaml (4 sites, FedAvg) for
compression.bits 32, 16, 8 and 4, with SecAgg+ off and on. Bytes are what the aggregator
logged as received per accepted upload (`update.accepted` bytes: chunk data plus scales, the
update payload; protobuf framing and the SecAgg+ key exchange are not counted), summed over
the round's clients and averaged over rounds. Accuracy is the final model's held-out accuracy
(the evaluation round after the last training round). With SecAgg+ the runs set maxWeight and
clipRange near the real example counts (255..477) and update values (|delta| < 1): the fixed
SecAgg+ code loses log2(maxWeight / examples) bits otherwise (docs/compression.md).

    python bench/compression.py [--rounds 10] [--repeats 1] [--bits 32 16 8 4] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SECURE = {"enabled": True, "maxWeight": 500, "clipRange": 2.0}


def manifest(path: Path, bits: int, secure: bool, rounds: int) -> Path:
    doc = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    doc["metadata"]["name"] = f"digits-{bits}-{'secure' if secure else 'plain'}"
    doc["spec"]["rounds"] = rounds
    doc["spec"]["compression"] = {"bits": bits}
    doc["spec"]["secureAggregation"] = SECURE if secure else {"enabled": False}
    path.write_text(yaml.safe_dump(doc))
    return path


def wire_bytes(log: Path) -> dict[int, int]:
    """Upload payload bytes the aggregator accepted, per round."""
    per_round: dict[int, int] = {}
    for line in log.read_text().splitlines():
        if '"update.accepted"' not in line:
            continue
        event = json.loads(line)
        per_round[event["round"]] = per_round.get(event["round"], 0) + int(event["bytes"])
    return per_round


def run(work: Path, bits: int, secure: bool, rounds: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{bits}-{secure}"
    path = manifest(work / f"{bits}-{secure}.yaml", bits, secure, rounds)
    env = os.environ | {"FEDFLEET_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "fedfleet", "local", "run", str(path), "--out", str(out)]
    done = subprocess.run(
        [*command, "--no-progress"], check=False, capture_output=True, text=True, env=env, timeout=1800
    )
    if done.returncode:
        raise RuntimeError(f"bits={bits} secure={secure} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    per_round = wire_bytes(out / "logs" / "aggregator.log")
    if sorted(per_round) != list(range(1, rounds + 1)):
        raise RuntimeError(f"bits={bits} secure={secure}: upload records for rounds {sorted(per_round)}")
    return {
        "accuracy": metrics["final"]["eval_accuracy"],
        "bytes_per_round": statistics.mean(per_round.values()),
        "clients_per_round": [r["clients"] for r in metrics["rounds"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (stochastic rounding varies)")
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 16, 8, 4])
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    args.bits = [32, *(b for b in args.bits if b != 32)]  # the baseline of every reduction
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for secure in (False, True):
            for bits in args.bits:
                runs = [run(Path(tmp) / str(i), bits, secure, args.rounds) for i in range(args.repeats)]
                results.append(
                    {
                        "secure_aggregation": secure,
                        "bits": bits,
                        "rounds": args.rounds,
                        "bytes_per_round": statistics.mean(r["bytes_per_round"] for r in runs),
                        "accuracy": statistics.mean(r["accuracy"] for r in runs),
                        "accuracies": [r["accuracy"] for r in runs],
                    }
                )
                if not args.json_only:
                    print(f"done: secure={secure} bits={bits} {results[-1]['accuracies']}", file=sys.stderr)
    for row in results:
        base = next(
            r for r in results if r["secure_aggregation"] == row["secure_aggregation"] and r["bits"] == 32
        )
        row["reduction"] = base["bytes_per_round"] / row["bytes_per_round"]
        row["accuracy_delta_points"] = 100 * (row["accuracy"] - base["accuracy"])
    print(json.dumps({"rounds": args.rounds, "repeats": args.repeats, "results": results}, indent=2))
    if args.json_only:
        return
    print("\n| SecAgg+ | bits | bytes / round | reduction | final accuracy | vs 32-bit (points) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in results:
        print(
            f"| {'on' if row['secure_aggregation'] else 'off'} | {row['bits']} | "
            f"{row['bytes_per_round']:,.0f} | {row['reduction']:.2f}x | {row['accuracy']:.4f} | "
            f"{row['accuracy_delta_points']:+.1f} |"
        )


if __name__ == "__main__":
    main()
