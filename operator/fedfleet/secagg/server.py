"""The aggregator's side of one SecAgg+ round.

It routes keys and sealed shares, tracks who survived each stage, sums masked chunks into one
accumulator of M + W lanes (uint32, or uint16/uint8 for narrow codes) as they arrive, collects
the reveals, and removes every mask block by block.
Stages (`stage`): keys -> shares -> inputs -> consistency -> unmask -> done (or aborted).

    U1 advertised keys (low-order keys, and long-term keys without the identity's signature,
       are refused on receipt)
    U2 sent shares (and kept >= t neighbours in U2)   U3 uploaded all words
    U4 endorsed U3 (consistency round)                 reveals come from U4 only

A refusal (`ProtocolError`) leaves the state untouched. An abort (`SecAggAbort`) wipes the
accumulator and releases nothing. The survivor set U3 is fixed when inputs close (a late chunk
is refused from then on); each survivor MACs it for each surviving neighbour, and a client
reveals only once t neighbours vouch for the same U3. Each client decides for itself which
share to reveal (b for U3, s_sk for U2 \\ U3); the server checks it got exactly that.
"""

from __future__ import annotations

import os

import numpy as np

from fedfleet.secagg import shamir
from fedfleet.secagg.authentication import Verifier
from fedfleet.secagg.client import Coverage, round_context
from fedfleet.secagg.crypto import KeyPair, check_public_key, pair_info
from fedfleet.secagg.errors import (
    ForbiddenReveal,
    MalformedMessage,
    NotAuthorized,
    OutOfOrder,
    OversizedMessage,
    ReplayedMessage,
    SecAggAbort,
    WrongBinding,
)
from fedfleet.secagg.graph import neighbour_graph, usable_degree
from fedfleet.secagg.masks import DEFAULT_BLOCK_WORDS, Keystream, thread_scratch
from fedfleet.secagg.messages import (
    Binding,
    EndorsementInbox,
    Endorsements,
    KeyAdvert,
    Neighbour,
    NeighbourKeys,
    Reveal,
    SealedShares,
    ShareInbox,
    ShareKind,
    SurvivorSet,
    encode_neighbour,
)
from fedfleet.secagg.params import SecAggParams
from fedfleet.secagg.quantize import Decoder


class SecAggServer:
    def __init__(
        self,
        training: str,
        round_number: int,
        participants: list[str],
        params: SecAggParams,
        *,
        dimension: int | None = None,
        accumulator: np.ndarray | None = None,
        graph_seed: bytes | None = None,
        block_words: int = DEFAULT_BLOCK_WORDS,
        verifier: Verifier | None = None,
        attempt: int = 0,
    ) -> None:
        """`dimension` (M) makes the server own an accumulator of M + W lanes (`add_chunk`,
        `unmask()`); pass `accumulator` to reuse one across rounds (it is zeroed here). Without
        a dimension the caller sums uploads itself and passes them to `unmask(summed)`.
        `verifier` checks each advertisement's signature as it arrives (so one bad client cannot
        make its neighbours abort); without a CA it checks signatures only."""
        if len(set(participants)) != len(participants) or len(participants) != params.participants:
            raise ValueError(f"{len(participants)} distinct participants expected, as in params")
        self.training, self.round_number, self.attempt = training, round_number, attempt
        self.verifier = verifier if verifier is not None else Verifier()
        self.context = round_context(training, round_number)
        self.params = params
        self.index = {c: i + 1 for i, c in enumerate(sorted(participants))}
        self.graph_seed = graph_seed if graph_seed is not None else os.urandom(32)
        self.keys: dict[str, KeyAdvert] = {}
        self._public_keys: set[bytes] = set()
        self.graph: dict[str, list[str]] = {}
        self._peers: dict[str, frozenset[str]] = {}
        self._entries: dict[str, bytes] = {}  # client -> its entry in its neighbours' key lists
        self.sealed: dict[str, dict[str, bytes]] = {}  # sender -> receiver -> sealed shares
        self.u2: set[str] = set()
        self.u3: set[str] = set()
        self.wanted: dict[str, ShareKind] = {}  # owner -> the one share kind we may collect
        self.endorsements: dict[str, dict[str, bytes]] = {}  # sender -> receiver -> MAC of U3
        self.reveals: set[str] = set()
        self._collected: dict[str, dict[int, bytes]] = {}  # owner -> holder index -> share
        self._block = block_words
        self.dimension = dimension
        self.accumulator: np.ndarray | None = None
        if dimension is not None:
            if dimension < 1:
                raise ValueError("dimension must be positive")
            size, lane = dimension + params.weight_words, params.lane_dtype
            if accumulator is None:  # zeros() maps lazily: fill(0) touches every page now
                accumulator = np.empty(size, dtype=lane)
            elif accumulator.dtype != lane or accumulator.shape != (size,):
                raise ValueError(f"accumulator must be {lane} of {size} words")
            accumulator.fill(0)
            self.accumulator = accumulator
        self._received: dict[str, Coverage] = {}
        self.stage = "keys"
        self.abort_reason = ""

    # -- guards ------------------------------------------------------------------------------
    def _expect(self, stage: str, client: str) -> None:
        if client not in self.index:
            raise NotAuthorized(f"{client!r} is not a participant of this round")
        if self.stage != stage:
            raise OutOfOrder(f"SecAgg stage {stage!r} is not open (the round is at {self.stage!r})")

    def _check_binding(self, binding: Binding, client: str) -> None:
        if (binding.training, binding.round) != (self.training, self.round_number):
            raise WrongBinding(
                f"message bound to training {binding.training!r} round {binding.round}, "
                f"not {self.training!r} round {self.round_number}"
            )
        if binding.client != client:
            raise NotAuthorized(f"message from {binding.client!r} sent by {client!r}")

    def _binding(self, client: str) -> Binding:
        return Binding(self.training, self.round_number, client)

    def _abort(self, reason: str) -> SecAggAbort:
        self.stage = "aborted"
        self.abort_reason = reason
        if self.accumulator is not None:
            self.accumulator.fill(0)  # the masked sum is worthless now; keep nothing of it
        self._collected.clear()
        return SecAggAbort(reason)

    # -- stage 1: keys -----------------------------------------------------------------------
    def add_keys(self, client: str, payload: bytes) -> None:
        self._expect("keys", client)
        if client in self.keys:
            raise ReplayedMessage(f"{client!r} already advertised keys this round")
        message = KeyAdvert.from_bytes(payload)
        self._check_binding(message.binding, client)
        if message.params != self.params.fingerprint():
            raise WrongBinding(f"{client!r} uses other SecAgg parameters than this round")
        if message.attempt != self.attempt:
            raise WrongBinding(f"advertisement for attempt {message.attempt}, not {self.attempt}")
        if message.c_pk == message.s_pk or {message.c_pk, message.s_pk} & self._public_keys:
            raise ReplayedMessage("public keys must be fresh: distinct from each other and from others'")
        for key in (message.c_pk, message.s_pk, message.long_term):
            check_public_key(key)
        self.verifier.verify_long_term(
            self.training, client, message.credential, message.signature, message.long_term
        )
        self.keys[client] = message
        self._public_keys |= {message.c_pk, message.s_pk}

    @property
    def all_advertised(self) -> bool:
        return len(self.keys) == len(self.index)

    def close_keys(self) -> None:
        """Draw the neighbour graph over U1 (k shrinks if fewer clients advertised)."""
        if self.stage != "keys":
            raise OutOfOrder(f"keys are closed already (the round is at {self.stage!r})")
        u1 = sorted(self.keys)
        k = usable_degree(self.params.neighbours, len(u1)) if len(u1) > 1 else 0
        if k < self.params.threshold:
            raise self._abort(
                f"{len(u1)} of {len(self.index)} clients advertised keys: too few for threshold "
                f"{self.params.threshold} (each needs {self.params.threshold} neighbours)"
            )
        self.graph = neighbour_graph(u1, k, self.graph_seed)
        self._peers = {c: frozenset(peers) for c, peers in self.graph.items()}
        self._entries = {
            c: encode_neighbour(
                Neighbour(c, self.index[c], a.c_pk, a.s_pk, a.long_term, a.credential, a.signature)
            )
            for c, a in self.keys.items()
        }
        self.stage = "shares"

    def neighbours_payload(self, client: str) -> bytes:
        if self.stage == "keys":
            raise OutOfOrder("neighbours are drawn when keys close; they are still open")
        if client not in self.graph:
            raise OutOfOrder(f"{client!r} has no neighbours: it did not advertise keys in time")
        entries = [self._entries[c] for c in self.graph[client]]
        return NeighbourKeys.encode(self._binding(client), self.index[client], entries)

    # -- stage 2: sealed shares --------------------------------------------------------------
    def add_shares(self, client: str, payload: bytes) -> None:
        self._expect("shares", client)
        if client not in self.graph:
            raise OutOfOrder(f"{client!r} did not advertise keys in time")
        if client in self.sealed:
            raise ReplayedMessage(f"{client!r} already sent its shares this round")
        message = SealedShares.from_bytes(payload, max_entries=len(self.graph[client]))
        self._check_binding(message.binding, client)
        shares = dict(message.shares)
        if len(shares) != len(message.shares) or shares.keys() != self._peers[client]:
            raise MalformedMessage("shares must address each of the client's neighbours exactly once")
        self.sealed[client] = shares

    @property
    def all_shared(self) -> bool:
        return set(self.sealed) == set(self.graph)

    def close_shares(self) -> None:
        """U2: clients that shared, pruned until each keeps >= t neighbours in U2 (otherwise its
        self mask could never be removed)."""
        if self.stage != "shares":
            raise OutOfOrder(f"shares cannot close at stage {self.stage!r}")
        u2 = set(self.sealed)
        t = self.params.threshold
        while short := {c for c in u2 if len(u2.intersection(self.graph[c])) < t}:
            u2 -= short
        if len(u2) < t + 1:
            raise self._abort(
                f"{len(self.sealed)} clients shared keys, {len(u2)} with >= {t} sharing neighbours: "
                f"too few for threshold {t}"
            )
        self.u2 = u2
        self.stage = "inputs"

    def shares_payload(self, client: str) -> bytes:
        if self.stage in ("keys", "shares"):
            raise OutOfOrder(f"shares are forwarded once they close (the round is at {self.stage!r})")
        if client not in self.u2:
            raise OutOfOrder(f"{client!r} is not in the round: it did not share keys in time")
        inbox = tuple((s, self.sealed[s][client]) for s in sorted(self.u2.intersection(self.graph[client])))
        return ShareInbox(self._binding(client), inbox).to_bytes()

    # -- stage 4: masked inputs --------------------------------------------------------------
    def check_input(self, client: str) -> None:
        """Only clients in U2 may add to the sum, and only while inputs are open."""
        self._expect("inputs", client)
        if client not in self.u2:
            raise OutOfOrder(f"{client!r} did not share keys: its masks could not be removed")

    def add_chunk(self, client: str, offset: int, words: np.ndarray | bytes) -> None:
        """Add masked words [offset, offset + len) of `client`'s upload to the accumulator
        (mod 2^lane). Chunks may come in any order and size; each word exactly once."""
        self.check_input(client)
        acc = self.accumulator
        if acc is None:
            raise OutOfOrder("this server was built without a dimension: it holds no accumulator")
        lane = self.params.lane_dtype
        if isinstance(words, bytes | bytearray | memoryview):
            if len(words) % lane.itemsize:
                raise MalformedMessage(f"a chunk of {len(words)} bytes is not whole {lane} words")
            words = np.frombuffer(words, dtype=lane)  # zero-copy
        if not isinstance(words, np.ndarray) or words.dtype != lane or words.ndim != 1:
            raise MalformedMessage(f"a masked chunk is a 1-d array of {lane} words")
        count = len(words)
        if count > self.params.max_chunk_words:
            raise OversizedMessage(f"chunk of {count} words exceeds {self.params.max_chunk_words}")
        if count == 0 or offset < 0 or offset + count > len(acc):
            raise MalformedMessage(f"chunk [{offset}, {offset + count}) is empty or outside [0, {len(acc)})")
        received = self._received.setdefault(client, Coverage())
        if received.overlaps(offset, offset + count):
            raise ReplayedMessage(
                f"{client!r}: words [{offset}, {offset + count}) overlap words already added"
            )
        target = acc[offset : offset + count]
        np.add(target, words, out=target)
        received.add(offset, offset + count)

    def uploaded(self) -> set[str]:
        """Clients whose every word arrived (through add_chunk)."""
        size = 0 if self.accumulator is None else len(self.accumulator)
        return {c for c, cov in self._received.items() if cov.total == size}

    def close_inputs(self, uploaded: set[str] | None = None) -> None:
        """U3: complete uploads (or `uploaded`, when the caller keeps the sum). Fixes the one
        share kind to collect per client, and checks every needed secret can reach t shares."""
        if self.stage != "inputs":
            raise OutOfOrder(f"inputs cannot close at stage {self.stage!r}")
        if uploaded is None:
            complete = self.uploaded()
            partial = sorted(set(self._received) - complete)
            if partial:
                raise self._abort(
                    f"uploads of {', '.join(partial)} stopped part-way: their words are in the sum "
                    "and cannot be taken out without unmasking them"
                )
            u3 = complete
        else:
            u3 = set(uploaded)
            if self._received and u3 != self.uploaded():
                raise ValueError("`uploaded` must match the chunks added to this server's accumulator")
        u3 &= self.u2
        t = self.params.threshold
        if len(u3) < t:
            raise self._abort(f"{len(u3)} masked uploads: below threshold {t}")
        wanted = {c: ShareKind.SELF_MASK for c in u3} | {c: ShareKind.MASK_KEY for c in self.u2 - u3}
        # a dropped client's key matters only if a survivor masked with it
        needed = {
            c for c, kind in wanted.items() if kind == ShareKind.SELF_MASK or u3.intersection(self.graph[c])
        }
        short = [_describe(c, wanted[c]) for c in sorted(needed) if len(u3.intersection(self.graph[c])) < t]
        if short:
            raise self._abort(f"fewer than {t} surviving neighbours hold shares of {', '.join(short)}")
        self.u3, self.wanted = u3, {c: wanted[c] for c in needed}
        self.stage = "consistency"

    # -- stage 5: consistency round ----------------------------------------------------------
    def survivors_for(self, client: str) -> bytes:
        """U3, the same for every survivor: what each endorses to its neighbours."""
        if self.stage not in ("consistency", "unmask"):
            raise OutOfOrder(f"the survivor set is fixed when inputs close (the round is at {self.stage!r})")
        if client not in self.u3:
            raise OutOfOrder(f"{client!r} has no masked upload in this round")
        return SurvivorSet(self._binding(client), tuple(sorted(self.u3))).to_bytes()

    def add_endorsements(self, client: str, payload: bytes) -> None:
        self._expect("consistency", client)
        if client not in self.u3:
            raise OutOfOrder(f"{client!r} has no masked upload in this round")
        if client in self.endorsements:
            raise ReplayedMessage(f"{client!r} already endorsed the survivor set")
        message = Endorsements.from_bytes(payload, max_entries=len(self.graph[client]))
        self._check_binding(message.binding, client)
        tags = dict(message.shares)
        if len(tags) != len(message.shares) or not tags.keys() <= self._peers[client] & self.u3:
            raise MalformedMessage("endorsements address surviving neighbours, each at most once")
        self.endorsements[client] = tags

    @property
    def all_endorsed(self) -> bool:
        return self.endorsements.keys() == self.u3

    def close_consistency(self) -> None:
        """U4: survivors that endorsed U3. Only they will reveal; each needed secret must still
        have t holders among them."""
        if self.stage != "consistency":
            raise OutOfOrder(f"the consistency round cannot close at stage {self.stage!r}")
        u4, t = set(self.endorsements), self.params.threshold
        short = [_describe(c, k) for c, k in sorted(self.wanted.items()) if len(u4 & self._peers[c]) < t]
        if short:
            raise self._abort(f"fewer than {t} neighbours endorsed the survivor set for {', '.join(short)}")
        self.stage = "unmask"

    def endorsements_for(self, client: str) -> bytes:
        """The MACs of U3 the client's neighbours addressed to it: it reveals once t are valid."""
        self._expect("unmask", client)
        if client not in self.endorsements:
            raise OutOfOrder(f"{client!r} did not endorse the survivor set")
        inbox = tuple(
            (sender, self.endorsements[sender][client])
            for sender in sorted(self._peers[client] & self.endorsements.keys())
            if client in self.endorsements[sender]
        )
        return EndorsementInbox(self._binding(client), inbox).to_bytes()

    # -- stage 6: reveals --------------------------------------------------------------------
    def _expected(self, client: str) -> dict[str, ShareKind]:
        """What an honest client reveals: for each neighbour it holds shares of (those in U2),
        b if that neighbour is in U3, else s_sk."""
        owners = self._peers[client] & self.u2
        return {o: ShareKind.SELF_MASK if o in self.u3 else ShareKind.MASK_KEY for o in owners}

    def add_reveal(self, client: str, payload: bytes) -> None:
        self._expect("unmask", client)
        if client not in self.endorsements:
            raise OutOfOrder(f"{client!r} did not endorse the survivor set: it may not reveal")
        if client in self.reveals:
            raise ReplayedMessage(f"{client!r} already revealed its shares")
        message = Reveal.from_bytes(payload, max_entries=len(self.graph[client]))
        self._check_binding(message.binding, client)
        expected = self._expected(client)
        got = {owner: (kind, share) for owner, kind, share in message.shares}
        if len(got) != len(message.shares):
            raise ForbiddenReveal("a reveal names one owner twice: only one share kind per client")
        for owner, (kind, share) in got.items():
            if owner not in expected:
                raise MalformedMessage(f"share of {owner!r}, whose shares this client does not hold")
            if kind != expected[owner]:
                raise ForbiddenReveal(
                    f"for {owner!r} only its {expected[owner].name} share may be revealed, not {kind.name}"
                )
            if not shamir.is_field_element(share):
                raise MalformedMessage(f"share of {owner!r} is not a field element")
        if len(got) != len(expected):
            raise MalformedMessage(
                f"reveal misses shares of {', '.join(sorted(expected.keys() - got.keys()))}"
            )
        self.reveals.add(client)
        for owner, (_, share) in got.items():
            if owner in self.wanted:
                self._collected.setdefault(owner, {})[self.index[client]] = share

    @property
    def all_revealed(self) -> bool:
        return self.reveals == self.endorsements.keys()

    def missing(self) -> list[str]:
        """Secrets still short of t shares."""
        t = self.params.threshold
        return [
            _describe(owner, kind)
            for owner, kind in sorted(self.wanted.items())
            if len(self._collected.get(owner, {})) < t
        ]

    # -- stage 7: unmasking ------------------------------------------------------------------
    def _mask_streams(self) -> list[tuple[Keystream, bool]]:
        """What to take out of the sum: each survivor's PRG(b_u), and for each dropped d the
        pairwise masks its surviving neighbours v added (+PRG(s_vd) if v < d, else -PRG)."""
        t = self.params.threshold
        streams = [(Keystream(shamir.combine(self._collected[u], t)), True) for u in sorted(self.u3)]
        for d in sorted(self.wanted.keys() - self.u3):
            key = KeyPair.from_private_bytes(shamir.combine(self._collected[d], t))
            for v in sorted(self.u3.intersection(self.graph[d])):
                seed = key.agree(self.keys[v].s_pk, pair_info("mask", self.context, d, v))
                streams.append((Keystream(seed), v < d))
        return streams

    def unmask(self, summed: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(float32 sum over U3 of w_u * clip(x_u), sum of w_u), masks removed block by block.

        The server's own accumulator, or `summed` (lanes, M + W words, summed by the caller), is
        unmasked and decoded in place: with 32-bit lanes the returned float32 array shares its
        memory (no second model-sized array); narrower lanes decode into a new float32 array.
        """
        if self.stage != "unmask":
            raise OutOfOrder(f"cannot unmask at stage {self.stage!r}")
        acc = self.accumulator if summed is None else summed
        if acc is None:
            raise OutOfOrder("no accumulator: pass the summed uploads")
        lane, weight_words = self.params.lane_dtype, self.params.weight_words
        if acc.dtype != lane or acc.ndim != 1 or len(acc) <= weight_words:
            raise ValueError(f"the sum is a 1-d {lane} array of M + W words")
        if short := self.missing():
            acc.fill(0)  # also a caller's sum: nothing of this round's inputs stays behind
            raise self._abort(f"fewer than {self.params.threshold} shares for {', '.join(short)}")
        streams = self._mask_streams()
        self._collected.clear()
        dimension = len(acc) - weight_words
        in_place = lane.itemsize == 4
        out = acc.view(np.float32)[:dimension] if in_place else np.empty(dimension, np.float32)
        scratch = thread_scratch(self._block)
        decoder = Decoder(self.params, len(self.u3))
        for begin in range(0, len(acc), self._block):
            block = acc[begin : begin + self._block]
            for stream, subtract in streams:
                words = stream.fill(scratch, begin, len(block), lane)
                if subtract:
                    np.subtract(block, words, out=block)
                else:
                    np.add(block, words, out=block)
            end = min(begin + len(block), dimension)
            if end > begin:  # the weight word(s) at the end stay integer codes
                decoder.decode(acc[begin:end], out[begin:end], scratch)
        weight = decoder.weight(acc[dimension:])
        self.stage = "done"
        return out, weight


def _describe(owner: str, kind: ShareKind) -> str:
    return f"{owner} ({'self mask' if kind == ShareKind.SELF_MASK else 'mask key'})"
