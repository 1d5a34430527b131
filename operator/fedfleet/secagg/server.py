"""The aggregator's side of one SecAgg+ round: routes keys and encrypted shares, tracks who
survived each stage, collects the reveals, and removes every mask from the summed uploads.

Stages: keys (U1 advertised) -> shares (U2 shared) -> inputs (U3 uploaded) -> unmask -> done.
Refusals raise ProtocolError with the gRPC status to answer; they never change the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfleet.secagg import messages as wire
from fedfleet.secagg import shamir
from fedfleet.secagg.client import context_of
from fedfleet.secagg.crypto import KEY_BYTES, KeyPair, ProtocolError
from fedfleet.secagg.graph import neighbour_graph
from fedfleet.secagg.masks import MaskExpander
from fedfleet.secagg.params import SecAggParams
from fedfleet.secagg.quantize import FIELD, dequantize, scale_for

MAX_SHARE_CIPHERTEXT = 1024


class SecAggAbort(RuntimeError):
    """Too few clients or shares: nothing may be released."""


@dataclass(frozen=True)
class Keys:
    c_pk: bytes
    s_pk: bytes


class SecAggServer:
    def __init__(
        self, training: str, round_number: int, participants: list[str], params: SecAggParams
    ) -> None:
        self.context = context_of(training, round_number)
        self.params = params
        self.index = {c: i + 1 for i, c in enumerate(sorted(participants))}
        self.keys: dict[str, Keys] = {}
        self.graph: dict[str, list[str]] = {}
        self.sealed: dict[str, dict[str, str]] = {}
        self.u2: set[str] = set()
        self.u3: set[str] = set()
        self.reveals: dict[str, dict[str, tuple[str, bytes]]] = {}
        self._by_owner: dict[tuple[str, str], dict[int, bytes]] = {}  # (owner, kind) -> holder index -> share
        self.stage = "keys"

    # -- guards ----------------------------------------------------------------------------
    def _expect(self, stage: str, client: str) -> None:
        if client not in self.index:
            raise ProtocolError("PERMISSION_DENIED", f"{client!r} is not a participant of this round")
        if self.stage != stage:
            raise ProtocolError(
                "FAILED_PRECONDITION", f"SecAgg stage {stage!r} is not open (now {self.stage!r})"
            )

    def _message(self, payload: bytes, client: str, fields: tuple[str, ...]) -> dict[str, object]:
        message = wire.decode(payload, ("context", "client", *fields))
        if message["context"] != self.context.decode():
            raise ProtocolError(
                "FAILED_PRECONDITION", f"message bound to {message['context']!r}, not this round"
            )
        if message["client"] != client:
            raise ProtocolError("PERMISSION_DENIED", f"message from {message['client']!r} sent by {client!r}")
        return message

    # -- stage 1: keys -----------------------------------------------------------------------
    def add_keys(self, client: str, payload: bytes) -> None:
        self._expect("keys", client)
        if client in self.keys:
            raise ProtocolError("ALREADY_EXISTS", f"{client!r} already advertised keys this round")
        message = self._message(payload, client, ("cPk", "sPk"))
        keys = Keys(
            wire.unb64(message["cPk"], KEY_BYTES, "cPk"), wire.unb64(message["sPk"], KEY_BYTES, "sPk")
        )
        if keys.c_pk == keys.s_pk or any(keys.s_pk in (k.c_pk, k.s_pk) for k in self.keys.values()):
            raise ProtocolError("INVALID_ARGUMENT", "public keys must be fresh and distinct")
        self.keys[client] = keys

    def close_keys(self) -> None:
        u1 = sorted(self.keys)
        k = min(self.params.neighbours, len(u1) - 1)
        if k * len(u1) % 2:
            k -= 1
        if k < self.params.threshold:
            self.stage = "aborted"
            raise SecAggAbort(
                f"{len(u1)} of {len(self.index)} clients advertised keys: too few for threshold "
                f"{self.params.threshold}"
            )
        self.graph = neighbour_graph(u1, k, self.context)
        self.stage = "shares"

    def neighbours_payload(self, client: str) -> bytes:
        if client not in self.graph:
            raise ProtocolError("FAILED_PRECONDITION", f"{client!r} did not advertise keys in time")
        return wire.encode(
            {
                "context": self.context.decode(),
                "index": self.index[client],
                "neighbours": [
                    {
                        "client": c,
                        "index": self.index[c],
                        "cPk": wire.b64(self.keys[c].c_pk),
                        "sPk": wire.b64(self.keys[c].s_pk),
                    }
                    for c in self.graph[client]
                ],
            }
        )

    # -- stage 2: encrypted shares -----------------------------------------------------------
    def add_shares(self, client: str, payload: bytes) -> None:
        self._expect("shares", client)
        if client not in self.graph:
            raise ProtocolError("FAILED_PRECONDITION", f"{client!r} did not advertise keys in time")
        if client in self.sealed:
            raise ProtocolError("ALREADY_EXISTS", f"{client!r} already sent its shares this round")
        message = self._message(payload, client, ("shares",))
        shares = message["shares"]
        if not isinstance(shares, dict) or set(shares) != set(self.graph[client]):
            raise ProtocolError("INVALID_ARGUMENT", "shares must address exactly the client's neighbours")
        if any(not isinstance(v, str) or len(v) > MAX_SHARE_CIPHERTEXT for v in shares.values()):
            raise ProtocolError("RESOURCE_EXHAUSTED", "a share ciphertext is oversized")
        self.sealed[client] = {str(k): str(v) for k, v in shares.items()}

    def close_shares(self) -> None:
        self.u2 = set(self.sealed)
        if len(self.u2) < self.params.threshold + 1:
            self.stage = "aborted"
            raise SecAggAbort(
                f"{len(self.u2)} clients shared keys: too few for threshold {self.params.threshold}"
            )
        self.stage = "inputs"

    def shares_payload(self, client: str) -> bytes:
        if client not in self.u2:
            raise ProtocolError("FAILED_PRECONDITION", f"{client!r} did not share keys in time")
        inbox = {s: self.sealed[s][client] for s in sorted(self.u2) if client in self.sealed[s]}
        return wire.encode({"context": self.context.decode(), "shares": inbox})

    # -- stage 3: masked inputs --------------------------------------------------------------
    def check_input(self, client: str) -> None:
        """Before a masked upload is accepted: only clients that shared keys may add to the sum."""
        self._expect("inputs", client)
        if client not in self.u2:
            raise ProtocolError(
                "FAILED_PRECONDITION", f"{client!r} did not share keys: its masks cannot be removed"
            )

    def close_inputs(self, uploaded: set[str]) -> None:
        self.u3 = uploaded & self.u2
        if len(self.u3) < self.params.threshold:
            self.stage = "aborted"
            raise SecAggAbort(f"{len(self.u3)} masked uploads: below threshold {self.params.threshold}")
        self.stage = "unmask"

    # -- stage 4: reveals --------------------------------------------------------------------
    def request_for(self, client: str) -> bytes:
        self._expect("unmask", client)
        if client not in self.u3:
            raise ProtocolError("FAILED_PRECONDITION", f"{client!r} has no masked upload in this round")
        peers = set(self.graph[client]) & self.u2
        return wire.encode(
            {
                "context": self.context.decode(),
                "survivors": sorted(peers & self.u3),
                "dropped": sorted(peers - self.u3),
            }
        )

    def add_reveal(self, client: str, payload: bytes) -> None:
        self._expect("unmask", client)
        if client not in self.u3:
            raise ProtocolError("FAILED_PRECONDITION", f"{client!r} has no masked upload in this round")
        if client in self.reveals:
            raise ProtocolError("ALREADY_EXISTS", f"{client!r} already revealed its shares")
        message = self._message(payload, client, ("shares",))
        shares = message["shares"]
        peers = set(self.graph[client]) & self.u2
        if not isinstance(shares, dict) or set(shares) != peers:
            raise ProtocolError("INVALID_ARGUMENT", "reveal must cover exactly the requested neighbours")
        parsed = {}
        for owner, entry in shares.items():
            expected = "b" if owner in self.u3 else "sk"
            if not isinstance(entry, dict) or entry.get("kind") != expected:
                raise ProtocolError(
                    "INVALID_ARGUMENT", f"for {owner!r} only its {expected!r} share may be revealed"
                )
            parsed[owner] = (expected, wire.unb64(entry.get("share"), shamir.SHARE_BYTES, "share"))
        self.reveals[client] = parsed
        for owner, (kind, share) in parsed.items():
            self._by_owner.setdefault((owner, kind), {})[self.index[client]] = share

    def _collected(self, owner: str, kind: str) -> dict[int, bytes]:
        return self._by_owner.get((owner, kind), {})

    def missing(self) -> list[str]:
        t = self.params.threshold
        short = [f"{o} (self mask)" for o in sorted(self.u3) if len(self._collected(o, "b")) < t]
        return short + [
            f"{o} (mask key)" for o in sorted(self.u2 - self.u3) if len(self._collected(o, "sk")) < t
        ]

    @property
    def all_revealed(self) -> bool:
        return set(self.reveals) == self.u3

    def unmask(self, summed: np.ndarray) -> tuple[np.ndarray, float]:
        """Remove all masks from the uint32 sum in place; returns (sum of weighted updates, sum of weights),
        both in units where the mean update is their ratio."""
        if self.stage != "unmask":
            raise SecAggAbort(f"cannot unmask at stage {self.stage!r}")
        if short := self.missing():
            self.stage = "aborted"
            raise SecAggAbort(f"fewer than {self.params.threshold} shares for {', '.join(short)}")
        expander = MaskExpander()
        for owner in sorted(self.u3):
            expander.apply(
                shamir.combine(self._collected(owner, "b"), self.params.threshold), summed, 0, subtract=True
            )
        for dropped in sorted(self.u2 - self.u3):
            key = KeyPair.from_private_bytes(
                shamir.combine(self._collected(dropped, "sk"), self.params.threshold)
            )
            for peer in sorted(set(self.graph[dropped]) & self.u3):
                seed = key.agree(self.keys[peer].s_pk, self.context + b"/mask")
                # peer added +PRG when peer < dropped, -PRG otherwise; take that contribution back out
                expander.apply(seed, summed, 0, subtract=peer < dropped)
        self.stage = "done"
        p = self.params
        values = dequantize(summed[:-1], len(self.u3), p.clip, scale_for(p.clip, p.participants))
        weight = float(summed[-1]) * p.participants / (FIELD - 1)
        return values, weight
