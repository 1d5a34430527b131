"""SecAgg+ messages and their stable binary encoding (carried as opaque bytes by gRPC).

Every message starts with a header: magic b"SA", format version, message kind, then its
binding (training, round, client). The client field names the sender of a client's message
and the recipient of the aggregator's; the receiver checks all three, which refuses replays
from other rounds, trainings or clients. Integers are big-endian, strings are UTF-8 with a
one-byte length, lists carry a four-byte count. Decoding checks every length, bound and the
exact end of the payload and raises `MalformedMessage` / `OversizedMessage`; it never trusts
a count before checking it against the bytes that are left.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import ClassVar, NamedTuple

from fedfleet.secagg.authentication import MAX_CREDENTIAL_BYTES, MAX_SIGNATURE_BYTES
from fedfleet.secagg.crypto import ENDORSEMENT_BYTES, KEY_BYTES, SEALED_SHARE_BYTES
from fedfleet.secagg.errors import MalformedMessage, OversizedMessage
from fedfleet.secagg.shamir import SHARE_BYTES

MAGIC = b"SA"
VERSION = 3  # 3: endorsements differ by direction (a version-2 peer would fail the consistency round)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_ID_BYTES = 255
FINGERPRINT_BYTES = 8


class Kind(IntEnum):
    KEYS = 1  # client -> aggregator: c_pk, s_pk
    NEIGHBOURS = 2  # aggregator -> client: its index and its neighbours' keys
    SHARES = 3  # client -> aggregator: one sealed share pair per neighbour
    INBOX = 4  # aggregator -> client: the sealed share pairs addressed to it
    SURVIVORS = 5  # aggregator -> client: the survivor set U3 (clients whose input is in the sum)
    REVEAL = 6  # client -> aggregator: its shares, by the survivor set it endorsed
    ENDORSEMENTS = 7  # client -> aggregator: one MAC of the survivor set per surviving neighbour
    ENDORSED = 8  # aggregator -> client: its neighbours' MACs of the survivor set, addressed to it


class ShareKind(IntEnum):
    SELF_MASK = 1  # a share of b_u: asked for neighbours whose masked input arrived
    MASK_KEY = 2  # a share of s_sk_u: asked for neighbours that dropped after sharing


@dataclass(frozen=True)
class Binding:
    training: str
    round: int
    client: str


@lru_cache(maxsize=65536)
def _id_field(value: str) -> bytes:
    """An id as written: one length byte, then UTF-8 (cached: ids repeat in every message)."""
    raw = value.encode()
    if not 0 < len(raw) <= MAX_ID_BYTES:
        raise ValueError(f"ids are 1..{MAX_ID_BYTES} UTF-8 bytes, got {len(raw)}")
    return bytes((len(raw),)) + raw


@lru_cache(maxsize=65536)
def _id_text(raw: bytes) -> str:
    return raw.decode()


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class _Writer:
    def __init__(self, kind: Kind, binding: Binding) -> None:
        self.parts = [MAGIC, bytes((VERSION, kind)), _id_field(binding.training), _U64.pack(binding.round)]
        self.parts.append(_id_field(binding.client))

    @classmethod
    def bare(cls) -> _Writer:
        """A writer of a message's part, without the header."""
        writer = cls.__new__(cls)
        writer.parts = []
        return writer

    def text(self, value: str) -> None:
        self.parts.append(_id_field(value))

    def raw(self, value: bytes, size: int) -> None:
        if len(value) != size:
            raise ValueError(f"expected {size} bytes, got {len(value)}")
        self.parts.append(value)

    def u8(self, value: int) -> None:
        self.parts.append(bytes((value,)))

    def u32(self, value: int) -> None:
        self.parts.append(_U32.pack(value))

    def u64(self, value: int) -> None:
        self.parts.append(_U64.pack(value))

    def blob(self, value: bytes) -> None:
        """Variable-length bytes: a two-byte length, then the bytes."""
        self.parts.append(len(value).to_bytes(2, "big") + value)

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes, kind: Kind) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedMessage(f"a SecAgg message is bytes, not {type(data).__name__}")
        if len(data) > MAX_MESSAGE_BYTES:
            raise OversizedMessage(f"SecAgg message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
        self.data = bytes(data)
        self.pos = 0
        self.kind = kind
        if self.take(2) != MAGIC:
            raise MalformedMessage("not a SecAgg message (bad magic)")
        version, got = self.take(1)[0], self.take(1)[0]
        if version != VERSION:
            raise MalformedMessage(f"SecAgg message format {version} is not supported (expected {VERSION})")
        if got != kind:
            name = Kind(got).name if got in Kind._value2member_map_ else str(got)
            raise MalformedMessage(f"expected a {kind.name} message, got {name}")
        self.binding = Binding(self.text(), _U64.unpack(self.take(8))[0], self.text())

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise MalformedMessage(f"{self.kind.name} message truncated at byte {len(self.data)}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def text(self) -> str:
        size = self.take(1)[0]
        if size == 0:
            raise MalformedMessage(f"{self.kind.name} message has an empty id")
        try:
            return _id_text(self.take(size))
        except UnicodeDecodeError:
            raise MalformedMessage(f"{self.kind.name} message has an id that is not UTF-8") from None

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def blob(self, limit: int) -> bytes:
        size = int.from_bytes(self.take(2), "big")
        if size > limit:
            raise OversizedMessage(f"{self.kind.name} message has a field of {size} bytes, at most {limit}")
        return self.take(size)

    def count(self, limit: int, min_entry_bytes: int) -> int:
        n = self.u32()
        if n > limit:
            raise OversizedMessage(f"{self.kind.name} message lists {n} entries, at most {limit} allowed")
        if n * min_entry_bytes > len(self.data) - self.pos:
            raise MalformedMessage(f"{self.kind.name} message announces {n} entries but is too short")
        return n

    def entries(self, limit: int, kind_byte: bool, fixed: int) -> list[tuple[str, ShareKind | None, bytes]]:
        """A counted list of (id, optional share kind, `fixed` bytes) entries, in one tight loop
        (the aggregator decodes thousands per round)."""
        n = self.count(limit, 2 + kind_byte + fixed)
        data, pos, out = self.data, self.pos, []
        kind: ShareKind | None = None
        try:
            for _ in range(n):
                size = data[pos]
                if not size:
                    raise MalformedMessage(f"{self.kind.name} message has an empty id")
                name = _id_text(data[pos + 1 : pos + 1 + size])
                pos += 1 + size
                if kind_byte:
                    kind = _SHARE_KINDS.get(data[pos])
                    if kind is None:
                        raise MalformedMessage(f"{self.kind.name} message has unknown share kind {data[pos]}")
                    pos += 1
                out.append((name, kind, data[pos : pos + fixed]))
                pos += fixed
        except IndexError:
            pos = len(data) + 1
        except UnicodeDecodeError:
            raise MalformedMessage(f"{self.kind.name} message has an id that is not UTF-8") from None
        if pos > len(data):
            raise MalformedMessage(f"{self.kind.name} message truncated at byte {len(data)}")
        self.pos = pos
        return out

    def names(self, limit: int) -> tuple[str, ...]:
        """A counted list of ids (the survivor set: every client decodes N of them)."""
        n = self.count(limit, 2)
        data, pos, out = self.data, self.pos, []
        try:
            for _ in range(n):
                size = data[pos]
                if not size:
                    raise MalformedMessage(f"{self.kind.name} message has an empty id")
                out.append(_id_text(data[pos + 1 : pos + 1 + size]))
                pos += 1 + size
        except IndexError:
            pos = len(data) + 1
        except UnicodeDecodeError:
            raise MalformedMessage(f"{self.kind.name} message has an id that is not UTF-8") from None
        if pos > len(data):
            raise MalformedMessage(f"{self.kind.name} message truncated at byte {len(data)}")
        self.pos = pos
        return tuple(out)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessage(f"{self.kind.name} message has {len(self.data) - self.pos} trailing bytes")


UNLIMITED = 1 << 31
_SHARE_KINDS = {kind.value: kind for kind in ShareKind}


@dataclass(frozen=True)
class KeyAdvert:
    """Stage 1, client -> aggregator, and forwarded to its neighbours (inside `NeighbourKeys`):
    two fresh public keys, and the client's long-term key with its identity's signature on it
    (see `authentication.py`: the fresh keys are bound to the long-term one when shares are sealed)."""

    binding: Binding
    c_pk: bytes
    s_pk: bytes
    params: bytes  # SecAggParams.fingerprint(): both sides must encode alike
    attempt: int = 0  # which start of this round (a retried round number is a new attempt)
    long_term: bytes = bytes(KEY_BYTES)  # the client's long-term X25519 key for this training
    credential: bytes = b""  # see fedfleet.secagg.authentication
    signature: bytes = b""  # the identity's, over long_term_statement(training, client, long_term)
    KIND: ClassVar[Kind] = Kind.KEYS

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.binding)
        w.raw(self.c_pk, KEY_BYTES)
        w.raw(self.s_pk, KEY_BYTES)
        w.raw(self.params, FINGERPRINT_BYTES)
        w.u64(self.attempt)
        w.raw(self.long_term, KEY_BYTES)
        w.blob(self.credential)
        w.blob(self.signature)
        return w.done()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAdvert:
        r = _Reader(data, cls.KIND)
        keys = r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(FINGERPRINT_BYTES)
        message = cls(
            r.binding,
            *keys,
            r.u64(),
            r.take(KEY_BYTES),
            r.blob(MAX_CREDENTIAL_BYTES),
            r.blob(MAX_SIGNATURE_BYTES),
        )
        r.end()
        return message


class Neighbour(NamedTuple):
    client: str
    share_x: int  # the Shamir x-coordinate of this client's shares (1-based, fixed per round)
    c_pk: bytes
    s_pk: bytes
    long_term: bytes = bytes(KEY_BYTES)  # the neighbour's long-term key
    credential: bytes = b""  # the neighbour's, to check `signature` against
    signature: bytes = b""  # the neighbour's identity signature on its long-term key


def encode_neighbour(peer: Neighbour) -> bytes:
    """One neighbour's entry of a `NeighbourKeys` message."""
    w = _Writer.bare()
    w.text(peer.client)
    w.u32(peer.share_x)
    w.raw(peer.c_pk, KEY_BYTES)
    w.raw(peer.s_pk, KEY_BYTES)
    w.raw(peer.long_term, KEY_BYTES)
    w.blob(peer.credential)
    w.blob(peer.signature)
    return w.done()


@dataclass(frozen=True)
class NeighbourKeys:
    """Stage 2, aggregator -> client: the recipient's own index and its neighbours' signed keys."""

    binding: Binding
    index: int
    neighbours: tuple[Neighbour, ...]
    KIND: ClassVar[Kind] = Kind.NEIGHBOURS

    def to_bytes(self) -> bytes:
        return self.encode(self.binding, self.index, [encode_neighbour(p) for p in self.neighbours])

    @classmethod
    def encode(cls, binding: Binding, index: int, entries: list[bytes]) -> bytes:
        """The message from entries written by `encode_neighbour` (the aggregator writes each
        client's entry once per round and sends it to all k of its neighbours)."""
        w = _Writer(cls.KIND, binding)
        w.u32(index)
        w.u32(len(entries))
        w.parts += entries
        return w.done()

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> NeighbourKeys:
        r = _Reader(data, cls.KIND)
        index = r.u32()
        count = r.count(max_entries, 2 + 4 + 3 * KEY_BYTES + 4)
        peers = tuple(
            Neighbour(
                r.text(),
                r.u32(),
                r.take(KEY_BYTES),
                r.take(KEY_BYTES),
                r.take(KEY_BYTES),
                r.blob(MAX_CREDENTIAL_BYTES),
                r.blob(MAX_SIGNATURE_BYTES),
            )
            for _ in range(count)
        )
        r.end()
        return cls(r.binding, index, peers)


@dataclass(frozen=True)
class _SealedList:
    binding: Binding
    shares: tuple[tuple[str, bytes], ...]  # (other party, sealed pair of shares or a MAC)
    KIND: ClassVar[Kind]
    SIZE: ClassVar[int] = SEALED_SHARE_BYTES

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.binding)
        w.u32(len(self.shares))
        for party, sealed in self.shares:
            w.text(party)
            w.raw(sealed, self.SIZE)
        return w.done()

    @classmethod
    def _decode(cls, data: bytes, max_entries: int) -> tuple[Binding, tuple[tuple[str, bytes], ...]]:
        r = _Reader(data, cls.KIND)
        shares = tuple((name, blob) for name, _, blob in r.entries(max_entries, False, cls.SIZE))
        r.end()
        return r.binding, shares


@dataclass(frozen=True)
class SealedShares(_SealedList):
    """Stage 2, client -> aggregator: for each neighbour (the receiver), its sealed shares."""

    KIND: ClassVar[Kind] = Kind.SHARES

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> SealedShares:
        return cls(*cls._decode(data, max_entries))


@dataclass(frozen=True)
class ShareInbox(_SealedList):
    """Stage 3, aggregator -> client: the sealed shares its neighbours (the senders) sent it."""

    KIND: ClassVar[Kind] = Kind.INBOX

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> ShareInbox:
        return cls(*cls._decode(data, max_entries))


@dataclass(frozen=True)
class SurvivorSet:
    """Consistency round, aggregator -> client: U3, the clients whose masked input is in the sum."""

    binding: Binding
    survivors: tuple[str, ...]
    KIND: ClassVar[Kind] = Kind.SURVIVORS

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.binding)
        w.u32(len(self.survivors))
        w.parts += map(_id_field, self.survivors)
        return w.done()

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> SurvivorSet:
        r = _Reader(data, cls.KIND)
        survivors = r.names(max_entries)
        r.end()
        return cls(r.binding, survivors)


@dataclass(frozen=True)
class Endorsements(_SealedList):
    """Consistency round, client -> aggregator: for each surviving neighbour (the receiver), a
    MAC of the survivor set under the pair's key; aggregator -> client (`EndorsementInbox`):
    those addressed to it, by sender."""

    KIND: ClassVar[Kind] = Kind.ENDORSEMENTS
    SIZE: ClassVar[int] = ENDORSEMENT_BYTES

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> Endorsements:
        return cls(*cls._decode(data, max_entries))


@dataclass(frozen=True)
class EndorsementInbox(_SealedList):
    KIND: ClassVar[Kind] = Kind.ENDORSED
    SIZE: ClassVar[int] = ENDORSEMENT_BYTES

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> EndorsementInbox:
        return cls(*cls._decode(data, max_entries))


@dataclass(frozen=True)
class Reveal:
    """Stage 5, client -> aggregator: the requested shares, one per owner."""

    binding: Binding
    shares: tuple[tuple[str, ShareKind, bytes], ...]
    KIND: ClassVar[Kind] = Kind.REVEAL

    def to_bytes(self) -> bytes:
        w = _Writer(self.KIND, self.binding)
        w.u32(len(self.shares))
        for owner, kind, share in self.shares:
            w.text(owner)
            w.u8(kind)
            w.raw(share, SHARE_BYTES)
        return w.done()

    @classmethod
    def from_bytes(cls, data: bytes, max_entries: int = UNLIMITED) -> Reveal:
        r = _Reader(data, cls.KIND)
        shares = tuple(
            (name, kind, blob)
            for name, kind, blob in r.entries(max_entries, True, SHARE_BYTES)
            if kind is not None
        )
        r.end()
        return cls(r.binding, shares)
