"""The random k-regular neighbour graph of a round (a circulant graph under a seeded shuffle)."""

from __future__ import annotations

import random


def neighbour_graph(clients: list[str], k: int, seed: bytes) -> dict[str, list[str]]:
    """Each client gets exactly k neighbours (k*n even, k < n); symmetric; fixed by `seed`."""
    n = len(clients)
    if not 0 < k < n or (k * n) % 2:
        raise ValueError(f"no {k}-regular graph on {n} clients")
    order = sorted(clients)
    random.Random(seed).shuffle(order)
    offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
    graph: dict[str, set[str]] = {c: set() for c in order}
    for i, client in enumerate(order):
        for d in offsets:
            other = order[(i + d) % n]
            graph[client].add(other)
            graph[other].add(client)
    return {c: sorted(peers) for c, peers in graph.items()}
