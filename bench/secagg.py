"""SecAgg+ compute cost against this machine's own limit for the same work.

For each (N clients, M parameters), in one process and one run: client compute per client,
server compute, the whole round, peak RSS, and alongside the limit: the time to expand the
same number of AES-128-CTR mask words into a reused buffer and add the same uint32 words with
numpy. Prints JSON and a table with the ratio ours/limit.

    python bench/secagg.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from fedfleet.secagg import SecAggClient, SecAggParams, SecAggServer  # noqa: E402
from fedfleet.secagg.masks import MaskExpander  # noqa: E402

CASES = [(10, 1_000_000), (50, 1_000_000), (100, 100_000), (10, 10_000_000)]


def machine_limit(mask_words: int, add_words: int, m: int) -> float:
    """Seconds to expand `mask_words` AES-CTR words and do `add_words` uint32 adds, in M-word passes."""
    expander, out = MaskExpander(), np.zeros(m + 1, dtype=np.uint32)
    seed = bytes(32)
    started = time.perf_counter()
    for _ in range(mask_words // (m + 1)):
        expander.apply(seed, out, 0)  # one keystream pass + one add pass, the minimum a mask costs
    rest = add_words - mask_words
    other = np.ones(m + 1, dtype=np.uint32)
    for _ in range(max(0, rest) // (m + 1)):
        out += other
    return time.perf_counter() - started


def one_round(n: int, m: int) -> dict[str, float]:
    params = SecAggParams.build(n, clip=1.0, max_weight=1000)
    ids = [f"c{i:03d}" for i in range(n)]
    rng = np.random.default_rng(0)
    update = rng.uniform(-0.5, 0.5, m).astype(np.float32)
    server = SecAggServer("bench", 1, ids, params)
    clients = {c: SecAggClient("bench", 1, c, params) for c in ids}
    client_s = server_s = 0.0

    def timed(fn, *args):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = fn(*args)
        return result, time.perf_counter() - started

    for c in ids:
        advert, t = timed(clients[c].advertise)
        client_s += t
        _, t = timed(server.add_keys, c, advert)
        server_s += t
    _, t = timed(server.close_keys)
    server_s += t
    for c in ids:
        sent, t = timed(clients[c].share_keys, server.neighbours_payload(c))
        client_s += t
        _, t = timed(server.add_shares, c, sent)
        server_s += t
    _, t = timed(server.close_shares)
    server_s += t
    total = np.zeros(m + 1, dtype=np.uint32)
    for c in ids:
        _, t = timed(clients[c].receive_shares, server.shares_payload(c))
        client_s += t
        masked, t = timed(clients[c].mask_update, update, 100.0)
        client_s += t
        started = time.perf_counter()
        total += masked
        server_s += time.perf_counter() - started
        del masked
    _, t = timed(server.close_inputs, set(ids))
    server_s += t
    for c in ids:
        reveal, t = timed(clients[c].reveal, server.request_for(c))
        client_s += t
        _, t = timed(server.add_reveal, c, reveal)
        server_s += t
    (values, weight), t = timed(server.unmask, total)
    server_s += t
    assert abs(weight - n * 0.1) < 1e-3 and np.allclose(values, n * 0.1 * update, atol=1e-3)
    k = params.neighbours
    client_mask_words = (1 + k) * (m + 1)  # self mask + one pairwise mask per neighbour
    server_words = n * (m + 1)  # one self mask removed per survivor
    limit_client = machine_limit(client_mask_words, client_mask_words, m)
    limit_server = machine_limit(server_words, 2 * server_words, m)  # unmasking, plus summing n uploads
    per_client = client_s / n
    return {
        "clients": n,
        "parameters": m,
        "neighbours": k,
        "threshold": params.threshold,
        "client_s": round(per_client, 4),
        "client_limit_s": round(limit_client, 4),
        "client_ratio": round(per_client / limit_client, 2),
        "server_s": round(server_s, 4),
        "server_limit_s": round(limit_server, 4),
        "server_ratio": round(server_s / limit_server, 2),
        "round_s": round(client_s + server_s, 3),
        "round_limit_s": round(n * limit_client + limit_server, 3),
        "round_ratio": round((client_s + server_s) / (n * limit_client + limit_server), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    cases = [(10, 100_000), (20, 50_000)] if args.quick else CASES
    results = [one_round(n, m) for n, m in cases]
    print(json.dumps(results, indent=2))
    print(
        f"\n{'N':>4}{'M':>10}{'k':>4}{'client s':>10}{'limit':>8}{'ratio':>7}{'server s':>10}{'limit':>8}"
        f"{'ratio':>7}{'round s':>9}{'ratio':>7}{'RSS MB':>8}"
    )
    for r in results:
        print(
            f"{r['clients']:>4}{r['parameters']:>10}{r['neighbours']:>4}{r['client_s']:>10}{r['client_limit_s']:>8}"
            f"{r['client_ratio']:>7}{r['server_s']:>10}{r['server_limit_s']:>8}{r['server_ratio']:>7}"
            f"{r['round_s']:>9}{r['round_ratio']:>7}{r['peak_rss_mb']:>8}"
        )


if __name__ == "__main__":
    main()
