"""Drive whole SecAgg+ rounds in one process (the gRPC layer carries exactly these payloads)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from fedfleet.identity.ca import Issuer
from fedfleet.identity.names import Identity
from fedfleet.secagg import LongTermKey, SecAggClient, SecAggParams, SecAggServer, Signer, Verifier

NAMESPACE = "ns"
DAY = datetime.timedelta(days=1)


@dataclass
class Fleet:
    params: SecAggParams
    updates: dict[str, np.ndarray]
    weights: dict[str, float]
    training: str = "t"
    round_number: int = 1
    server: SecAggServer = field(init=False)
    clients: dict[str, SecAggClient] = field(init=False)

    def __post_init__(self) -> None:
        ids = sorted(self.updates)
        m = len(next(iter(self.updates.values())))
        self.server = SecAggServer(
            self.training, self.round_number, ids, self.params, dimension=m, graph_seed=b"fixed graph"
        )
        self.clients = {c: SecAggClient(self.training, self.round_number, c, self.params) for c in ids}

    @property
    def ids(self) -> list[str]:
        return sorted(self.updates)

    @property
    def dimension(self) -> int:
        return len(next(iter(self.updates.values())))


def make_fleet(n: int, m: int = 2_000, seed: int = 0, **build: object) -> Fleet:
    """n clients with distinct random updates in [-1.2, 1.2] (some values get clipped at 1)."""
    rng = np.random.default_rng(seed)
    updates = {f"c{i:02d}": rng.uniform(-1.2, 1.2, m).astype(np.float32) for i in range(n)}
    weights = {c: float(rng.integers(1, 1_500)) for c in updates}  # some above max_weight
    options: dict[str, object] = {"clip": 1.0, "max_weight": 1_000.0} | build
    return Fleet(SecAggParams.build(n, **options), updates, weights)  # type: ignore[arg-type]


def authenticate(fleet: Fleet, ca: Issuer | None = None) -> dict[str, LongTermKey]:
    """Give every client of the fleet a certificate of one training CA (namespace "ns", site
    "site") and a long-term key signed with it, and make clients and server check each other's.
    Returns the long-term keys (a test plays a malicious client with one's signer)."""
    ca = ca or Issuer.generate("test CA", DAY)
    keys = {}
    for c in fleet.ids:
        bundle = ca.issue(Identity.of_client(NAMESPACE, fleet.training, "site", c), DAY)
        keys[c] = LongTermKey(Signer.from_pem(bundle.cert_pem, bundle.key_pem), fleet.training, c)
    trust = ca.trust_pem
    fleet.server = SecAggServer(
        fleet.training,
        fleet.round_number,
        fleet.ids,
        fleet.params,
        dimension=fleet.dimension,
        graph_seed=b"fixed graph",
        verifier=Verifier(trust, NAMESPACE, fleet.training),
    )
    fleet.clients = {
        c: SecAggClient(
            fleet.training,
            fleet.round_number,
            c,
            fleet.params,
            long_term=keys[c],
            verifier=Verifier(trust, NAMESPACE, fleet.training),
        )
        for c in fleet.ids
    }
    return keys


def keys_and_shares(
    fleet: Fleet, skip_advertise: Iterable[str] = (), skip_shares: Iterable[str] = ()
) -> None:
    server, clients = fleet.server, fleet.clients
    advertised = [c for c in fleet.ids if c not in set(skip_advertise)]
    for c in advertised:
        server.add_keys(c, clients[c].advertise())
    server.close_keys()
    shared = [c for c in advertised if c not in set(skip_shares)]
    for c in shared:
        server.add_shares(c, clients[c].share_keys(server.neighbours_payload(c)))
    server.close_shares()


def inputs_closed(n: int, m: int, neighbours: int) -> Fleet:
    """An authenticated fleet of n whose every client has uploaded, inputs closed: where the
    consistency round, and a lying aggregator's chance, begins."""
    fleet = make_fleet(n, m, neighbours=neighbours)
    authenticate(fleet)
    keys_and_shares(fleet)
    for c in fleet.ids:
        upload(fleet, c)
    fleet.server.close_inputs()
    return fleet


def upload(fleet: Fleet, client: str, chunk: int = 700, rng: np.random.Generator | None = None) -> None:
    """Stream one client's masked update in chunks (shuffled when `rng` is given)."""
    c, m = fleet.clients[client], fleet.dimension
    c.receive_shares(fleet.server.shares_payload(client))
    c.start_upload(m, fleet.weights[client])
    offsets = list(range(0, m, chunk))
    if rng is not None:
        rng.shuffle(offsets)
    pieces = [
        (offset, c.mask_chunk(offset, fleet.updates[client][offset : offset + chunk])) for offset in offsets
    ]
    pieces.append((m, c.weight_words()))
    if rng is not None:
        rng.shuffle(pieces)  # type: ignore[arg-type,unused-ignore]
    for offset, words in pieces:
        fleet.server.add_chunk(client, offset, words)


def run_round(
    fleet: Fleet,
    drop_after_keys: Iterable[str] = (),
    drop_after_shares: Iterable[str] = (),
    drop_after_upload: Iterable[str] = (),
    chunk: int = 700,
    shuffle_seed: int | None = None,
) -> tuple[np.ndarray, float]:
    """A whole round; clients in the drop sets vanish after that step. Returns unmask()."""
    keys_and_shares(fleet, skip_shares=drop_after_keys)
    rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
    uploaders = [c for c in fleet.ids if c in fleet.server.u2 and c not in set(drop_after_shares)]
    for c in uploaders:
        upload(fleet, c, chunk, rng)
    fleet.server.close_inputs()
    reveal(fleet, [c for c in uploaders if c not in set(drop_after_upload)])
    return fleet.server.unmask()


def reveal(fleet: Fleet, clients: Iterable[str]) -> None:
    """After inputs close: the consistency round (each endorses the survivor set it is shown),
    then each reveals on the endorsements it receives."""
    server, members = fleet.server, sorted(clients)
    for c in members:
        server.add_endorsements(c, fleet.clients[c].endorse(server.survivors_for(c)))
    server.close_consistency()
    for c in members:
        server.add_reveal(c, fleet.clients[c].reveal(server.endorsements_for(c)))


def plain(fleet: Fleet, members: Iterable[str]) -> tuple[np.ndarray, float]:
    """The weighted sum SecAgg+ should release: sum of min(w, max_weight) * clip(x), in float64."""
    p = fleet.params
    total = np.zeros(fleet.dimension)
    weight = 0.0
    for c in members:
        w = min(fleet.weights[c], p.max_weight)
        total += w * np.clip(fleet.updates[c].astype(np.float64), -p.clip, p.clip)
        weight += w
    return total, weight


def bound(fleet: Fleet, summands: int, expected: np.ndarray) -> np.ndarray:
    """Each code is off by less than one step (stochastic rounding), plus float32 output rounding."""
    step = fleet.params.max_weight / fleet.params.scale
    limit: np.ndarray = summands * step + np.abs(expected) * 2.0**-23 + 1e-9
    return limit
