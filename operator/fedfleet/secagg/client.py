"""A client's side of one SecAgg+ round (fresh keys every round).

    advertise() -> share_keys(neighbours) -> receive_shares(inbox)
    -> start_upload(M, weight) -> mask_chunk(offset, values)... + weight_words()
    -> endorse(survivors) -> reveal(endorsements)

Each step is allowed once and in this order; every message from the aggregator must be bound
to this training, round and client. Nothing the aggregator relays is taken on its word:

- the advertisement is signed with this client's identity key (`Signer`), and each
  neighbour's is checked (`Verifier`: signature, chain to the training's CA, the certificate
  names that neighbour) before anything is sealed to it or masked with it;
- after its upload, the client MACs the survivor set it is shown for each surviving neighbour,
  under the pair's key and in that direction (a tag from u to v is not one from v to u, so the
  aggregator cannot reflect a client's own tags back to it), and reveals only once t
  neighbours have vouched for the same set;
- which share of a neighbour it reveals follows from that one set (b if the neighbour
  survived, s_sk if not), and it reveals once per round: never both for one owner, which
  would let the aggregator unmask that neighbour's input.

It also refuses to mask the same words twice (a one-time pad reused on different data leaks
their difference). A failed check ends the client's part in the round (stage "aborted").
"""

from __future__ import annotations

import hmac

import numpy as np

from fedfleet.secagg import shamir
from fedfleet.secagg.authentication import LongTermKey, Signer, Verifier
from fedfleet.secagg.crypto import (
    CHANNEL_BYTES,
    KEY_BYTES,
    SHARE_PLAINTEXT_BYTES,
    KeyPair,
    endorsements,
    pack_strings,
    pair_info,
    seal,
    survivors_digest,
    unseal,
)
from fedfleet.secagg.errors import (
    AuthenticationFailed,
    InconsistentView,
    MalformedMessage,
    NotAuthorized,
    OutOfOrder,
    ProtocolError,
    ReplayedMessage,
    SecAggAbort,
    WrongBinding,
)
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
)
from fedfleet.secagg.params import SecAggParams
from fedfleet.secagg.quantize import Encoder


def round_context(training: str, round_number: int) -> bytes:
    """What every derived key and every associated datum of this round is bound to."""
    return pack_strings("round", training, round_number)


def share_aad(context: bytes, sender: str, receiver: str, keys: bytes) -> bytes:
    """Associated data of the shares `sender` seals to `receiver`: with `keys`, both clients'
    fresh public keys as each saw them (any substitution makes the seal fail to open)."""
    return pack_strings("shares", context, sender, receiver, keys)


def pair_keys(sender: tuple[bytes, bytes], receiver: tuple[bytes, bytes]) -> bytes:
    return b"".join((*sender, *receiver))


class Coverage:
    """Disjoint word ranges already taken, to refuse overlaps (sorted list; chunks mostly append)."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.total = 0

    def overlaps(self, begin: int, end: int) -> bool:
        return any(b < end and begin < e for b, e in self.ranges)

    def add(self, begin: int, end: int) -> None:
        merged: list[tuple[int, int]] = []
        for b, e in self.ranges:
            if e == begin:
                begin = b
            elif b == end:
                end = e
            else:
                merged.append((b, e))
        merged.append((begin, end))
        merged.sort()
        self.ranges = merged
        self.total = sum(e - b for b, e in merged)


class SecAggClient:
    def __init__(
        self,
        training: str,
        round_number: int,
        client_id: str,
        params: SecAggParams,
        *,
        block_words: int = DEFAULT_BLOCK_WORDS,
        long_term: LongTermKey | None = None,
        verifier: Verifier | None = None,
        attempt: int = 0,
    ) -> None:
        """`long_term` (signed by the client's identity, one per process) and `verifier` (the
        training's CA) default to an ephemeral key and signature-only checks: no
        authentication, for plaintext loopback runs where every party shares one machine."""
        self.binding = Binding(training, round_number, client_id)
        self.long_term = long_term or LongTermKey(Signer.ephemeral(), training, client_id)
        self.verifier = verifier if verifier is not None else Verifier()
        self.attempt = attempt
        self.survivors: tuple[str, ...] = ()
        self.context = round_context(training, round_number)
        self.client = client_id
        self.params = params
        self.c_keys, self.s_keys = KeyPair.generate(), KeyPair.generate()
        self.self_seed = shamir.random_secret()  # b_u
        self.index = 0
        self.neighbours: dict[str, Neighbour] = {}
        self.held: dict[str, bytes] = {}  # owner -> our share of b_owner || our share of s_sk_owner
        self._channel: dict[str, bytes] = {}  # neighbour -> AES-GCM key, then MAC key of the pair
        self._vouchers: dict[str, bytes] = {}  # neighbour -> the tag it sends if it saw our set
        self._streams: list[tuple[Keystream, bool]] = []
        self._block = block_words
        self._encoder: Encoder | None = None
        self._dimension = 0
        self._masked = Coverage()
        self._weight_done = False
        self.stage = "advertise"

    # -- guards ------------------------------------------------------------------------------
    def _expect(self, *stages: str) -> None:
        if self.stage not in stages:
            raise OutOfOrder(
                f"SecAgg client step needs stage {' or '.join(stages)!r}; it is at {self.stage!r}"
            )

    def _fail(self, err: ProtocolError) -> ProtocolError:
        """A check that failed on something only a lying aggregator (or neighbour) sends: this
        client takes no further part in the round."""
        self.stage = "aborted"
        return err

    def _check_binding(self, binding: Binding) -> None:
        if binding != self.binding:
            raise WrongBinding(
                f"message bound to training {binding.training!r} round {binding.round} client "
                f"{binding.client!r}, not to this client's round"
            )

    # -- stage 1 -----------------------------------------------------------------------------
    def advertise(self) -> bytes:
        """Our two public keys: c_pk encrypts shares to us, s_pk agrees pairwise mask seeds."""
        self._expect("advertise")
        lt = self.long_term
        self.stage = "share"
        return KeyAdvert(
            self.binding,
            self.c_keys.public,
            self.s_keys.public,
            self.params.fingerprint(),
            self.attempt,
            lt.public,
            lt.credential,
            lt.signature,
        ).to_bytes()

    # -- stage 2 -----------------------------------------------------------------------------
    def share_keys(self, payload: bytes) -> bytes:
        """Given our neighbours' keys, seal to each its Shamir shares of b_u and s_sk_u."""
        self._expect("share")
        message = NeighbourKeys.from_bytes(payload, max_entries=self.params.neighbours)
        self._check_binding(message.binding)
        peers: dict[str, Neighbour] = {}
        xs = {0, message.index}
        for peer in message.neighbours:
            if peer.client == self.client or peer.client in peers or peer.share_x in xs:
                raise MalformedMessage(f"neighbour list repeats or misnumbers {peer.client!r}")
            peers[peer.client] = peer
            xs.add(peer.share_x)
        if len(peers) < self.params.threshold:
            raise SecAggAbort(f"{len(peers)} neighbours, fewer than the threshold {self.params.threshold}")
        channels = {}
        for c, p in peers.items():
            try:
                self.verifier.verify_long_term(
                    self.binding.training, c, p.credential, p.signature, p.long_term
                )
                pair = self.long_term.pair_key(c, p.long_term)
                info = pair_info("shares", self.context, self.client, c)
                channels[c] = self.c_keys.agree(p.c_pk, info, salt=pair, length=CHANNEL_BYTES)
            except (AuthenticationFailed, MalformedMessage) as err:
                raise self._fail(
                    AuthenticationFailed(f"neighbour keys refused, leaving the round: {err}")
                ) from None
        mine = (self.c_keys.public, self.s_keys.public)
        holders = [p.share_x for p in peers.values()]
        b_shares = shamir.split(self.self_seed, self.params.threshold, holders)
        sk_shares = shamir.split(self.s_keys.private_bytes(), self.params.threshold, holders)
        sealed = tuple(
            (
                c,
                seal(
                    channels[c][:KEY_BYTES],
                    b_shares[p.share_x] + sk_shares[p.share_x],
                    share_aad(self.context, self.client, c, pair_keys(mine, (p.c_pk, p.s_pk))),
                ),
            )
            for c, p in sorted(peers.items())
        )
        self.index, self.neighbours, self._channel = message.index, peers, channels
        self.stage = "receive"
        return SealedShares(self.binding, sealed).to_bytes()

    # -- stage 3 -----------------------------------------------------------------------------
    def receive_shares(self, payload: bytes) -> None:
        """Open the shares our neighbours sent; we mask with exactly those neighbours."""
        self._expect("receive")
        message = ShareInbox.from_bytes(payload, max_entries=len(self.neighbours))
        self._check_binding(message.binding)
        held: dict[str, bytes] = {}
        for sender, blob in message.shares:
            if sender not in self.neighbours:
                raise NotAuthorized(f"share from {sender!r}, who is not our neighbour")
            if sender in held:
                raise ReplayedMessage(f"two shares from {sender!r}")
            theirs = self.neighbours[sender]
            keys = pair_keys((theirs.c_pk, theirs.s_pk), (self.c_keys.public, self.s_keys.public))
            aad = share_aad(self.context, sender, self.client, keys)
            try:
                plain = unseal(self._channel[sender][:KEY_BYTES], blob, aad)
            except AuthenticationFailed:
                raise AuthenticationFailed(
                    f"the shares of {sender!r} fail authentication: tampered, misaddressed, or sealed "
                    "for other keys than the ones relayed to us (substituted keys); we mask with no "
                    "neighbour whose shares do not open"
                ) from None
            if len(plain) != SHARE_PLAINTEXT_BYTES or not all(
                shamir.is_field_element(part) for part in (plain[:32], plain[32:])
            ):
                raise MalformedMessage(f"share from {sender!r} is not a pair of field elements")
            held[sender] = plain
        if len(held) < self.params.threshold:
            raise SecAggAbort(
                f"shares from {len(held)} neighbours, fewer than the threshold {self.params.threshold}: "
                "our masks could not be removed"
            )
        streams = [(Keystream(self.self_seed), False)]
        for peer in sorted(held):
            seed = self.s_keys.agree(
                self.neighbours[peer].s_pk, pair_info("mask", self.context, self.client, peer)
            )
            streams.append((Keystream(seed), self.client > peer))  # +PRG(s_uv) if u < v, else -PRG
        self.held, self._streams = held, streams
        self.stage = "mask"

    # -- stage 4 -----------------------------------------------------------------------------
    def start_upload(self, dimension: int, weight: float) -> None:
        """Fix the update length M and this client's weight (example count, capped at max_weight)."""
        self._expect("mask")
        if dimension < 1:
            raise ValueError("the update needs at least one word")
        self._encoder = Encoder(self.params, weight)
        self._dimension = dimension
        self.stage = "upload"

    @property
    def upload_words(self) -> int:
        """M + W: the length of the masked upload (update words, then the weight words)."""
        return self._dimension + self.params.weight_words

    def mask_chunk(self, offset: int, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Masked words [offset, offset + len(values)) of the upload, from float32 update values.

        `out` (the lane dtype, `params.lane_dtype`, same length) is written and returned; with
        32-bit lanes it may be `values.view(np.uint32)` to mask in place. Each word may be
        masked once per round.
        """
        self._expect("upload")
        assert self._encoder is not None
        values = np.asarray(values)
        if values.dtype != np.float32 or values.ndim != 1:
            raise ValueError(f"values must be a 1-d float32 array, got {values.dtype} {values.shape}")
        end = offset + len(values)
        if offset < 0 or end > self._dimension or not len(values):
            raise ValueError(f"chunk [{offset}, {end}) is empty or outside the update [0, {self._dimension})")
        if self._masked.overlaps(offset, end):
            raise ReplayedMessage(f"words [{offset}, {end}) overlap words already masked this round")
        lane = self.params.lane_dtype
        if out is None:
            out = np.empty(len(values), dtype=lane)
        elif out.dtype != lane or out.shape != values.shape:
            raise ValueError(f"out must be a {lane} array shaped like values")
        scratch, step = thread_scratch(self._block), self._block
        try:
            for begin in range(0, len(values), step):
                target = out[begin : begin + step]
                self._encoder.encode(values[begin : begin + step], target, offset + begin, scratch)
                for stream, subtract in self._streams:
                    words = stream.fill(scratch, offset + begin, len(target), lane)
                    if subtract:
                        np.subtract(target, words, out=target)
                    else:
                        np.add(target, words, out=target)
        except ValueError:
            out.fill(0)  # blocks masked before the bad one must not leave either
            raise
        self._masked.add(offset, end)
        return out

    def weight_words(self) -> np.ndarray:
        """The masked weight word(s), words [M, M + W) of the upload."""
        self._expect("upload")
        assert self._encoder is not None
        if self._weight_done:
            raise ReplayedMessage("the weight words were already masked this round")
        out = self._encoder.weight_lanes()
        scratch = thread_scratch(self._block)
        for stream, subtract in self._streams:
            words = stream.fill(scratch, self._dimension, len(out), out.dtype)
            if subtract:
                np.subtract(out, words, out=out)
            else:
                np.add(out, words, out=out)
        self._weight_done = True
        return out

    def mask_update(self, values: np.ndarray, weight: float, out: np.ndarray | None = None) -> np.ndarray:
        """The whole masked upload at once: M masked update words, then the weight word(s).
        `out` (lane dtype, M + W words) is written and returned; with 32-bit lanes its first M
        words may be `values`' own memory (masked in place: no second model in memory)."""
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        size = len(values) + self.params.weight_words
        if out is None:
            out = np.empty(size, dtype=self.params.lane_dtype)
        elif out.dtype != self.params.lane_dtype or out.shape != (size,):
            raise ValueError(f"out must be {size} words of {self.params.lane_dtype}")
        self.start_upload(len(values), weight)
        self.mask_chunk(0, values, out[: len(values)])
        out[len(values) :] = self.weight_words()
        return out

    @property
    def upload_complete(self) -> bool:
        return self._weight_done and self._masked.total == self._dimension

    # -- stage 5: consistency round ---------------------------------------------------------
    def endorse(self, payload: bytes) -> bytes:
        """Vouch, to each surviving neighbour, for the survivor set U3 we were shown. We endorse
        one set per round; our reveal will follow from it."""
        self._expect("upload")
        if not self.upload_complete:
            raise OutOfOrder("endorsing before this client's masked upload was complete")
        message = SurvivorSet.from_bytes(payload, max_entries=self.params.participants)
        self._check_binding(message.binding)
        survivors = message.survivors
        if len(set(survivors)) != len(survivors) or list(survivors) != sorted(survivors):
            raise MalformedMessage("the survivor set must list distinct clients in order")
        if self.client not in survivors:
            raise self._fail(
                InconsistentView("the survivor set leaves out this client, whose input was sent")
            )
        strangers = sorted(set(survivors) & self.neighbours.keys() - self.held.keys())
        if strangers:
            raise self._fail(
                InconsistentView(
                    f"the survivor set names neighbours that never sent us shares: {strangers[:3]}"
                )
            )
        surviving = sorted(set(survivors) & self.held.keys())
        if len(surviving) < self.params.threshold:
            raise self._fail(
                InconsistentView(
                    f"{len(surviving)} of our neighbours survived, fewer than the threshold "
                    f"{self.params.threshold}"
                )
            )
        digest = survivors_digest(self.context, survivors)
        tags = []
        for c in surviving:
            mine, theirs = endorsements(self._channel[c][KEY_BYTES:], self.client, c, digest)
            tags.append((c, mine))
            self._vouchers[c] = theirs
        self.survivors = survivors
        self.stage = "endorsed"
        return Endorsements(self.binding, tuple(tags)).to_bytes()

    # -- stage 6 -----------------------------------------------------------------------------
    def reveal(self, payload: bytes) -> bytes:
        """Given the neighbours' endorsements addressed to us: if at least t of them vouch for
        the very set we endorsed, reveal b of each neighbour in it and s_sk of each that is not
        (once; never both for one owner). Otherwise refuse and leave the round."""
        if self.stage == "revealed":
            raise ReplayedMessage("this client already revealed its shares this round")
        self._expect("endorsed")
        message = EndorsementInbox.from_bytes(payload, max_entries=len(self.neighbours))
        self._check_binding(message.binding)
        senders = [sender for sender, _ in message.shares]
        if len(set(senders)) != len(senders):
            raise MalformedMessage("two endorsements from one neighbour")
        valid = sum(
            1
            for sender, tag in message.shares
            if sender in self._vouchers and hmac.compare_digest(tag, self._vouchers[sender])
        )
        if valid < self.params.threshold:
            raise self._fail(
                InconsistentView(
                    f"{valid} neighbours vouch for the survivor set we endorsed, fewer than the "
                    f"threshold {self.params.threshold}: the aggregator may have shown others another set; "
                    "revealing nothing"
                )
            )
        survivors = set(self.survivors)
        shares = tuple(
            (owner, ShareKind.SELF_MASK, held[:32])
            if owner in survivors
            else (owner, ShareKind.MASK_KEY, held[32:])
            for owner, held in sorted(self.held.items())
        )
        self.stage = "revealed"
        return Reveal(self.binding, shares).to_bytes()
