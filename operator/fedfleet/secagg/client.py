"""A client's side of one SecAgg+ round.

advertise() -> share_keys(neighbours) -> receive_shares(shares) -> mask_update(...) -> reveal(request)
Every message carries the round's context (training/round) and the sender; a step out of
order, a replay, or a request to reveal both secrets of one neighbour is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfleet.secagg import messages as wire
from fedfleet.secagg import shamir
from fedfleet.secagg.crypto import KEY_BYTES, KeyPair, ProtocolError, seal, unseal
from fedfleet.secagg.masks import MaskExpander
from fedfleet.secagg.params import SecAggParams
from fedfleet.secagg.quantize import FIELD, quantize_into, scale_for


@dataclass(frozen=True)
class Peer:
    client: str
    index: int
    c_pk: bytes
    s_pk: bytes


def context_of(training: str, round_number: int) -> bytes:
    return f"fedfleet/{training}/{round_number}".encode()


class SecAggClient:
    def __init__(self, training: str, round_number: int, client_id: str, params: SecAggParams) -> None:
        self.context = context_of(training, round_number)
        self.client = client_id
        self.params = params
        self.c_keys, self.s_keys = KeyPair.generate(), KeyPair.generate()
        self.self_seed = shamir.random_secret()
        self._share_keys: dict[str, bytes] = {}
        self.neighbours: dict[str, Peer] = {}
        self.partners: dict[str, Peer] = {}  # neighbours whose shares arrived: the masks we add
        self.held: dict[str, tuple[bytes, bytes]] = {}
        self.revealed: dict[str, str] = {}
        self.stage = "advertise"
        self.expander = MaskExpander()
        self.rng = np.random.default_rng()

    def _expect(self, stage: str) -> None:
        if self.stage != stage:
            raise ProtocolError(
                "FAILED_PRECONDITION", f"SecAgg step {stage!r} out of order (at {self.stage!r})"
            )

    def _check_context(self, message: dict[str, object]) -> None:
        if message["context"] != self.context.decode():
            raise ProtocolError("FAILED_PRECONDITION", f"message for {message['context']!r}, not this round")

    def advertise(self) -> bytes:
        self._expect("advertise")
        self.stage = "share"
        return wire.encode(
            {
                "context": self.context.decode(),
                "client": self.client,
                "cPk": wire.b64(self.c_keys.public),
                "sPk": wire.b64(self.s_keys.public),
            }
        )

    def share_keys(self, payload: bytes) -> bytes:
        """Given the neighbours' keys, encrypt to each a share of our self-mask seed and mask key."""
        self._expect("share")
        message = wire.decode(payload, ("context", "index", "neighbours"))
        self._check_context(message)
        for entry in message["neighbours"]:
            peer = Peer(
                str(entry["client"]),
                int(entry["index"]),
                wire.unb64(entry["cPk"], KEY_BYTES, "cPk"),
                wire.unb64(entry["sPk"], KEY_BYTES, "sPk"),
            )
            if peer.client == self.client or peer.client in self.neighbours:
                raise ProtocolError("INVALID_ARGUMENT", f"neighbour list repeats {peer.client!r}")
            self.neighbours[peer.client] = peer
        if len(self.neighbours) < self.params.threshold:
            raise ProtocolError(
                "FAILED_PRECONDITION",
                f"{len(self.neighbours)} neighbours, threshold is {self.params.threshold}",
            )
        holders = [p.index for p in self.neighbours.values()]
        seed_shares = shamir.split(self.self_seed, self.params.threshold, holders)
        key_shares = shamir.split(self.s_keys.private_bytes(), self.params.threshold, holders)
        sealed = {}
        for peer in self.neighbours.values():
            plaintext = wire.encode(
                {
                    "from": self.client,
                    "to": peer.client,
                    "b": wire.b64(seed_shares[peer.index]),
                    "sk": wire.b64(key_shares[peer.index]),
                }
            )
            key = self._share_key(peer)
            sealed[peer.client] = wire.b64(seal(key, plaintext, self._aad(self.client, peer.client)))
        self.stage = "receive"
        return wire.encode({"context": self.context.decode(), "client": self.client, "shares": sealed})

    def _share_key(self, peer: Peer) -> bytes:
        """The same key encrypts shares both ways between two neighbours: agree once."""
        if peer.client not in self._share_keys:
            self._share_keys[peer.client] = self.c_keys.agree(peer.c_pk, self.context + b"/shares")
        return self._share_keys[peer.client]

    def _aad(self, sender: str, receiver: str) -> bytes:
        return self.context + b"|" + sender.encode() + b"|" + receiver.encode()

    def receive_shares(self, payload: bytes) -> None:
        self._expect("receive")
        message = wire.decode(payload, ("context", "shares"))
        self._check_context(message)
        for sender, blob in message["shares"].items():
            peer = self.neighbours.get(sender)
            if peer is None:
                raise ProtocolError("INVALID_ARGUMENT", f"share from {sender!r}, who is not a neighbour")
            key = self._share_key(peer)
            inner = wire.decode(
                unseal(key, wire.unb64(blob, what="share"), self._aad(sender, self.client)),
                ("from", "to", "b", "sk"),
            )
            if (inner["from"], inner["to"]) != (sender, self.client):
                raise ProtocolError("PERMISSION_DENIED", f"share from {sender!r} names other parties")
            self.held[sender] = (
                wire.unb64(inner["b"], shamir.SHARE_BYTES, "share"),
                wire.unb64(inner["sk"], shamir.SHARE_BYTES, "share"),
            )
        self.partners = {c: self.neighbours[c] for c in self.held}
        self.stage = "mask"

    def pair_seed(self, peer: Peer) -> bytes:
        return self.s_keys.agree(peer.s_pk, self.context + b"/mask")

    def mask_update(self, values: np.ndarray, weight: float) -> np.ndarray:
        """The masked upload: M encoded words of `weight x values`, plus one masked weight word."""
        self._expect("mask")
        p = self.params
        fraction = min(weight, p.max_weight) / p.max_weight
        scaled = values.astype(np.float32, copy=True)
        scaled *= np.float32(fraction)
        out = np.empty(len(values) + 1, dtype=np.uint32)
        quantize_into(scaled, out[:-1], p.clip, scale_for(p.clip, p.participants), self.rng)
        out[-1] = int(np.floor(fraction * (FIELD - 1) / p.participants + self.rng.random()))
        self.expander.apply(self.self_seed, out, 0)
        for peer in self.partners.values():
            self.expander.apply(self.pair_seed(peer), out, 0, subtract=self.client > peer.client)
        self.stage = "reveal"
        return out

    def reveal(self, payload: bytes) -> bytes:
        """Shares the aggregator asks for: self-mask seeds of survivors, mask keys of dropped
        neighbours. Never both for one neighbour, in this request or across requests."""
        self._expect("reveal")
        message = wire.decode(payload, ("context", "survivors", "dropped"))
        self._check_context(message)
        survivors, dropped = set(message["survivors"]), set(message["dropped"])
        if survivors & dropped:
            raise ProtocolError(
                "PERMISSION_DENIED", f"asked for both secrets of {sorted(survivors & dropped)}"
            )
        out = {}
        for owner, kind in [(o, "b") for o in sorted(survivors)] + [(o, "sk") for o in sorted(dropped)]:
            if owner not in self.held:
                raise ProtocolError("INVALID_ARGUMENT", f"no share held for {owner!r}")
            if self.revealed.get(owner, kind) != kind:
                raise ProtocolError("PERMISSION_DENIED", f"already revealed the other secret of {owner!r}")
            self.revealed[owner] = kind
            seed_share, key_share = self.held[owner]
            out[owner] = {"kind": kind, "share": wire.b64(seed_share if kind == "b" else key_share)}
        return wire.encode({"context": self.context.decode(), "client": self.client, "shares": out})
