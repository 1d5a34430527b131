"""The bulk streams' own codecs: uploads decoded without copying, downloads serialized once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedfleet.aggregator.broadcast import Broadcast
from fedfleet.aggregator.checkpoints import CheckpointStore
from fedfleet.aggregator.wire import Malformed, parse_update_message
from fedfleet.chunks import Chunk, checksum, iter_chunks
from fedfleet.v1 import aggregator_pb2 as pb


def test_a_chunk_decodes_as_protobuf_does_with_its_data_in_place() -> None:
    chunk = pb.TensorChunk(
        name="layer.weight",
        dtype="q8",
        shape=[3, -1, 2**40],
        offset=2**33,
        data=b"\x01\x02\x03" * 5,
        crc32=0xFFFFFFFE,
        block_values=64,
        scales=b"\x00\x00\x80\x3f",
        values=15,
    )
    raw = pb.UpdateMessage(chunk=chunk).SerializeToString()
    parsed = parse_update_message(raw)
    assert isinstance(parsed, Chunk)
    assert parsed == Chunk(
        "layer.weight", "q8", (3, -1, 2**40), 2**33, chunk.data, 0xFFFFFFFE, 64, chunk.scales, 15
    )
    assert isinstance(parsed.data, memoryview) and parsed.data.obj is raw  # no copy


def test_headers_unknown_fields_and_unpacked_shapes() -> None:
    header = pb.UpdateHeader(training="t", client_id="c", round=3, num_examples=7, session="s")
    assert parse_update_message(pb.UpdateMessage(header=header).SerializeToString()) == header
    assert parse_update_message(b"") is None
    inner = (
        b"\x0a\x01x"  # name "x"
        + b"\x18\x02\x18\x05"  # shape 2, 5 unpacked
        + b"\x50\x07"  # field 10 (unknown varint)
        + b"\x2a\x02ab"  # data "ab"
    )
    parsed = parse_update_message(b"\x12" + bytes([len(inner)]) + inner)
    assert isinstance(parsed, Chunk) and parsed.shape == (2, 5) and bytes(parsed.data) == b"ab"


def test_malformed_messages_are_named_not_raised() -> None:
    good = pb.UpdateMessage(chunk=pb.TensorChunk(name="x", data=b"abcd")).SerializeToString()
    for raw in (good[:-2], b"\x12\x05\x0a\xff", b"\x12\x03\x0a\x01\xff", b"\x13"):
        parsed = parse_update_message(raw)
        assert isinstance(parsed, Malformed) and parsed.reason.startswith("malformed UpdateMessage")


def test_the_broadcast_is_the_models_chunks_serialized_once(tmp_path: Path) -> None:
    weights = {
        "b": np.arange(10, dtype=np.float32),
        "a": np.linspace(0, 1, 3000, dtype=np.float32).reshape(30, 100),
        "h": np.ones(5, dtype=np.float16),
    }
    checkpoint = CheckpointStore(tmp_path).save(0, weights, {}, {})
    broadcast = Broadcast(checkpoint, 4096, tmp_path)
    sent = [pb.TensorChunk.FromString(m) for m in broadcast.messages()]
    assert sent == list(iter_chunks(checkpoint.load_weights(), 4096))
    assert all(c.crc32 == checksum(c.data) for c in sent) and len(sent) == 5
    assert list(broadcast.messages()) == list(broadcast.messages())  # every download the same bytes
