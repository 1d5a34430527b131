"""Drive a whole SecAgg+ round in one process (the gRPC layer only carries these same payloads)."""

from __future__ import annotations

import numpy as np
from fedfleet.secagg import SecAggClient, SecAggParams, SecAggServer


def run_round(
    updates: dict[str, np.ndarray],
    weights: dict[str, float],
    params: SecAggParams,
    drop_after_keys: frozenset[str] = frozenset(),
    drop_after_upload: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, float, SecAggServer]:
    """Returns (unmasked weighted sum, total weight, server); clients in the drop sets vanish there."""
    ids = sorted(updates)
    server = SecAggServer("t", 1, ids, params)
    clients = {c: SecAggClient("t", 1, c, params) for c in ids}
    for c in ids:
        server.add_keys(c, clients[c].advertise())
    server.close_keys()
    for c in ids:
        server.add_shares(c, clients[c].share_keys(server.neighbours_payload(c)))
    server.close_shares()
    alive = [c for c in ids if c not in drop_after_keys]
    total = np.zeros(len(next(iter(updates.values()))) + 1, dtype=np.uint32)
    uploaded = set()
    for c in alive:
        clients[c].receive_shares(server.shares_payload(c))
        server.check_input(c)
        total += clients[c].mask_update(updates[c], weights[c])
        uploaded.add(c)
    server.close_inputs(uploaded)
    for c in sorted(uploaded - drop_after_upload):
        server.add_reveal(c, clients[c].reveal(server.request_for(c)))
    values, weight = server.unmask(total)
    return values, weight, server


def plain(
    updates: dict[str, np.ndarray], weights: dict[str, float], params: SecAggParams, members: set[str]
) -> tuple[np.ndarray, float]:
    fractions = {c: min(weights[c], params.max_weight) / params.max_weight for c in members}
    return sum(updates[c] * fractions[c] for c in members), sum(fractions.values())  # type: ignore[return-value]
