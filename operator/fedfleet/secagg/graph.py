"""The round's neighbour graph: a random k-regular graph (Bell et al.'s randomly relabelled
Harary graph), drawn from a fresh per-round seed. k = n - 1 is the complete graph (classic SecAgg).
"""

from __future__ import annotations

import random


def usable_degree(k: int, n: int) -> int:
    """The largest degree <= k that a k-regular graph on n nodes can have (k < n, k*n even)."""
    k = min(k, n - 1)
    return k - 1 if k * n % 2 else k


def neighbour_graph(clients: list[str], k: int, seed: bytes) -> dict[str, list[str]]:
    """Each client gets exactly k neighbours; symmetric; fixed by `seed` (same seed, same graph)."""
    n = len(clients)
    if len(set(clients)) != n:
        raise ValueError("client ids must be distinct")
    if not 0 < k < n or (k * n) % 2:
        raise ValueError(f"no {k}-regular graph on {n} clients")
    order = sorted(clients)
    random.Random(seed).shuffle(order)  # the relabelling; the seed is 32 fresh random bytes per round
    # Harary graph H(k, n): join each node to the k/2 nearest on each side of a ring, plus the
    # opposite node when k is odd (then n is even).
    offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
    graph: dict[str, set[str]] = {c: set() for c in order}
    for i, client in enumerate(order):
        for d in offsets:
            other = order[(i + d) % n]
            graph[client].add(other)
            graph[other].add(client)
    return {c: sorted(peers) for c, peers in graph.items()}
