"""The bulk streams' chunks to and from gRPC's bytes, without protobuf copies of the data.

gRPC hands the receiver each message as one `bytes` object. Parsing it with protobuf copies
every chunk's data into the message, and every read of `chunk.data` copies it again; here a
chunk's `data` and `scales` are `memoryview`s into gRPC's own buffer, which the checksum, the
checks and the fold (or the client's model) then read in place: the aggregator decodes uploads
so (`parse_update_message`), a client its downloads (`parse_tensor_chunk`). Only `TensorChunk`
takes this path; the (small) header goes through protobuf. The decoder follows the protobuf
wire format (unknown fields skipped, the last value of a scalar wins, packed or unpacked
`shape`), and anything malformed becomes a `Malformed` value the servicer refuses with
INVALID_ARGUMENT (a client: DATA_LOSS).

Sending, `update_message` serializes a chunk whose data is a view of the client's update with
one copy of the data (protobuf would copy it into the message, again into its parent, and again
to serialize): protobuf encodes the small fields, the data field is appended after them.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from fedfleet.chunks import Chunk
from fedfleet.refusal import Refusal
from fedfleet.v1 import aggregator_pb2 as pb

VARINT, I64, LEN, I32 = 0, 1, 2, 5
HEADER_FIELD, CHUNK_FIELD = 1, 2
DATA_FIELD = 5  # TensorChunk.data
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Malformed:
    reason: str


class _Bad(Exception):
    pass


def _varint(raw: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Bad("truncated or overlong varint")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _U64, pos
        shift += 7


def _skip(raw: bytes, pos: int, end: int, wire_type: int) -> int:
    if wire_type == VARINT:
        return _varint(raw, pos, end)[1]
    if wire_type == I64:
        pos += 8
    elif wire_type == I32:
        pos += 4
    elif wire_type == LEN:
        size, pos = _varint(raw, pos, end)
        pos += size
    else:
        raise _Bad(f"unsupported wire type {wire_type}")
    if pos > end:
        raise _Bad("field runs past the message")
    return pos


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _chunk(raw: bytes, view: memoryview, pos: int, end: int) -> Chunk:
    name = dtype = ""
    shape: list[int] = []
    offset = crc32 = block_values = values = 0
    data: memoryview | bytes = b""
    scales: memoryview | bytes = b""
    while pos < end:
        key, pos = _varint(raw, pos, end)
        field, wire_type = key >> 3, key & 7
        if wire_type == LEN and field in (1, 2, 3, 5, 8):
            size, pos = _varint(raw, pos, end)
            stop = pos + size
            if stop > end:
                raise _Bad("field runs past the message")
            if field == 5:
                data = view[pos:stop]
            elif field == 8:
                scales = view[pos:stop]
            elif field == 3:  # packed shape
                while pos < stop:
                    dim, pos = _varint(raw, pos, stop)
                    shape.append(_signed(dim))
            else:
                try:
                    text = str(raw[pos:stop], "utf-8")
                except UnicodeDecodeError:
                    raise _Bad("a string field is not UTF-8") from None
                name, dtype = (text, dtype) if field == 1 else (name, text)
            pos = stop
        elif wire_type == VARINT and field in (3, 4, 6, 7, 9):
            value, pos = _varint(raw, pos, end)
            if field == 3:
                shape.append(_signed(value))
            elif field == 4:
                offset = value
            elif field == 6:
                crc32 = value & 0xFFFFFFFF
            elif field == 7:
                block_values = value & 0xFFFFFFFF
            else:
                values = value
        else:
            pos = _skip(raw, pos, end, wire_type)
    return Chunk(name, dtype, tuple(shape), offset, data, crc32, block_values, scales, values)


UpdatePart = Chunk | pb.UpdateHeader | Malformed | None


def parse_update_message(raw: bytes) -> UpdatePart:
    """One `UpdateMessage`: a chunk (zero-copy), the header (protobuf), or why it is malformed.
    None: a message with neither (an empty oneof)."""
    try:
        pos, end, found = 0, len(raw), None
        view = memoryview(raw)
        while pos < end:
            key, pos = _varint(raw, pos, end)
            field, wire_type = key >> 3, key & 7
            if wire_type == LEN and field in (HEADER_FIELD, CHUNK_FIELD):
                size, pos = _varint(raw, pos, end)
                if pos + size > end:
                    raise _Bad("field runs past the message")
                found = (field, pos, pos + size)  # a oneof: the last one wins
                pos += size
            else:
                pos = _skip(raw, pos, end, wire_type)
        if found is None:
            return None
        field, begin, stop = found
        if field == HEADER_FIELD:
            return pb.UpdateHeader.FromString(raw[begin:stop])
        return _chunk(raw, view, begin, stop)
    except (_Bad, DecodeError) as err:
        return Malformed(f"malformed UpdateMessage: {err}")


def parse_tensor_chunk(raw: bytes) -> Chunk:
    """One `TensorChunk` (a download's message), its data a view of `raw`; malformed: a
    `Refusal` (DATA_LOSS) that names the flaw."""
    try:
        return _chunk(raw, memoryview(raw), 0, len(raw))
    except _Bad as err:
        raise Refusal("DATA_LOSS", f"malformed TensorChunk: {err}") from None


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _encode_varint(field << 3 | wire_type)


def data_key(size: int) -> bytes:
    """What precedes a `TensorChunk`'s data of `size` bytes: appended after the small fields,
    the data needs no copy into a protobuf message."""
    return _key(DATA_FIELD, LEN) + _encode_varint(size)


def update_message(chunk: Chunk) -> bytes:
    """`UpdateMessage(chunk=chunk)` serialized, with one copy of the chunk's data."""
    head = pb.TensorChunk(
        name=chunk.name,
        dtype=chunk.dtype,
        shape=list(chunk.shape),
        offset=chunk.offset,
        crc32=chunk.crc32,
        block_values=chunk.block_values,
        scales=bytes(chunk.scales),
        values=chunk.values,
    ).SerializeToString()
    if not len(chunk.data):  # proto3 leaves an empty field out
        return pb.UpdateMessage(chunk=pb.TensorChunk.FromString(head)).SerializeToString()
    key = data_key(len(chunk.data))
    inner = len(head) + len(key) + len(chunk.data)
    return b"".join((_key(CHUNK_FIELD, LEN), _encode_varint(inner), head, key, chunk.data))
