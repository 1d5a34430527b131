"""The bulk streams' own codecs: uploads decoded without copying, downloads serialized once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fedfleet.aggregator.broadcast import Broadcast
from fedfleet.aggregator.checkpoints import CheckpointStore
from fedfleet.chunks import Chunk, checksum, chunk_views, iter_chunks, to_message
from fedfleet.compression import quantized_chunks
from fedfleet.refusal import Refusal
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.wire import Malformed, parse_tensor_chunk, parse_update_message, update_message


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
    broadcast = Broadcast(checkpoint, 4096)
    sent = [pb.TensorChunk.FromString(m) for m in broadcast.messages()]
    assert sent == list(iter_chunks(checkpoint.load_weights(), 4096))
    assert all(c.crc32 == checksum(c.data) for c in sent) and len(sent) == 5
    assert list(broadcast.messages()) == list(broadcast.messages())  # every download the same bytes
    shutil.rmtree(checkpoint.path)  # pruned while a download reads it: the download goes on whole
    read = [parse_tensor_chunk(m) for m in broadcast.messages()]  # as a client decodes them
    assert [(c.name, c.offset, bytes(c.data), c.crc32) for c in read] == [
        (c.name, c.offset, c.data, c.crc32) for c in sent
    ]


def test_a_model_file_cut_short_under_a_download_ends_it_with_an_error_not_a_short_chunk(
    tmp_path: Path,
) -> None:
    checkpoint = CheckpointStore(tmp_path).save(0, {"w": np.ones(3000, np.float32)}, {}, {})
    broadcast = Broadcast(checkpoint, 4096)
    with checkpoint.model_path.open("r+b") as model:
        model.truncate(checkpoint.model_path.stat().st_size - 4)
    with pytest.raises(OSError, match="checkpoint 0: the model file ends inside a tensor"):
        list(broadcast.messages())


def test_an_update_message_is_what_protobuf_reads_and_copies_the_data_once() -> None:
    weights = {"w": np.linspace(-1, 1, 3000, dtype=np.float32).reshape(30, 100), "e": np.ones(0, np.float32)}
    views = list(chunk_views(weights, 4096))
    assert np.shares_memory(np.frombuffer(views[-1].data, np.float32), weights["w"])  # no copy yet
    for view, expected in zip(views, iter_chunks(weights, 4096), strict=True):
        raw = update_message(view)
        assert pb.UpdateMessage.FromString(raw) == pb.UpdateMessage(chunk=expected)
        assert parse_update_message(raw) == view
    quantized = next(quantized_chunks({"w": weights["w"]}, 8, block=64))
    assert pb.UpdateMessage.FromString(update_message(quantized)).chunk == to_message(quantized)


def test_a_downloaded_chunk_is_read_in_place_and_a_malformed_one_refused() -> None:
    message = next(iter_chunks({"w": np.arange(6, dtype=np.float32)}))
    raw = message.SerializeToString()
    chunk = parse_tensor_chunk(raw)
    assert to_message(chunk) == message and isinstance(chunk.data, memoryview) and chunk.data.obj is raw
    with pytest.raises(Refusal, match="malformed TensorChunk") as refused:
        parse_tensor_chunk(raw[:-3])
    assert refused.value.code == "DATA_LOSS"
