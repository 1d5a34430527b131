"""The global model as download chunks: framed and checksummed once per model version, their
data read from the checkpoint file by every client's download.

Built from the checkpoint file after each round (and at start): each tensor is read in
chunk-sized pieces and checksummed, and each message's small fields are serialized once. A
download sends each of those heads with its data read back from the checkpoint (the page cache
holds it, not the process): no per-client serialization or CRC, and no second copy of the model
written to disk (a spool of whole serialized messages cost one model's writes per round more,
about 0.35 s per 40 MB through the page cache on the reference machine, against one more copy of the
data in memory per download).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from fedfleet.aggregator.checkpoints import Checkpoint
from fedfleet.chunks import checksum, chunk_ranges
from fedfleet.v1 import aggregator_pb2 as pb
from fedfleet.wire import data_key


class Broadcast:
    def __init__(self, checkpoint: Checkpoint, chunk_bytes: int) -> None:
        self.model_version = checkpoint.round
        # Held open, closed when the last download still reading it lets go of this object: a
        # checkpoint directory removed meanwhile stays readable.
        self._file = checkpoint.model_path.open("rb", buffering=0)
        self._parts: list[tuple[bytes, int, int]] = []  # (head, the data's file offset, its length)
        for slot, begin in checkpoint.tensor_offsets():
            for offset, length in chunk_ranges(slot.nbytes, slot.dtype.itemsize, chunk_bytes):
                head = pb.TensorChunk(
                    name=slot.name,
                    dtype=slot.dtype.name,
                    shape=list(slot.shape),
                    offset=offset,
                    crc32=checksum(self._read(begin + offset, length)),
                ).SerializeToString()
                self._parts.append((head + data_key(length) if length else head, begin + offset, length))

    def _read(self, position: int, length: int) -> bytes:
        data = os.pread(self._file.fileno(), length, position)
        if len(data) != length:
            raise OSError(f"checkpoint {self.model_version}: the model file ends inside a tensor")
        return data

    def messages(self) -> Iterator[bytes]:
        """The serialized chunks of the model, in order (each one's data read when it is sent)."""
        for head, position, length in self._parts:
            yield head + self._read(position, length) if length else head
