"""The global model as download chunks, serialized once per model version and shared by every
client's download.

Built from the checkpoint file after each round (and at start): each tensor is read in
chunk-sized pieces, checksummed and serialized into a `TensorChunk` message once, and the
messages are appended to an unnamed temporary file in the state directory (`O_TMPFILE`).
A download reads the ready messages back (the page cache holds them, not the process) and
gRPC sends them as they are: no per-client serialization, CRC or copy of the model in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from fedfleet.aggregator.checkpoints import Checkpoint
from fedfleet.chunks import checksum
from fedfleet.v1 import aggregator_pb2 as pb


class Broadcast:
    def __init__(self, checkpoint: Checkpoint, chunk_bytes: int, spool_dir: Path) -> None:
        self.model_version = checkpoint.round
        # closed when the last download still reading it lets go of this object
        self._file = os.fdopen(os.open(spool_dir, os.O_TMPFILE | os.O_RDWR, 0o600), "r+b", buffering=0)
        self._fd = self._file.fileno()
        self._index: list[tuple[int, int]] = []  # (file offset, message length)
        self._build(checkpoint, chunk_bytes)

    def _build(self, checkpoint: Checkpoint, chunk_bytes: int) -> None:
        position = 0
        with checkpoint.model_path.open("rb", buffering=0) as model:
            for slot, begin in checkpoint.tensor_offsets():
                step = max(slot.dtype.itemsize, chunk_bytes - chunk_bytes % slot.dtype.itemsize)
                for offset in range(0, max(slot.nbytes, 1), step):
                    data = os.pread(model.fileno(), min(step, slot.nbytes - offset), begin + offset)
                    message = pb.TensorChunk(
                        name=slot.name,
                        dtype=slot.dtype.name,
                        shape=list(slot.shape),
                        offset=offset,
                        data=data,
                        crc32=checksum(data),
                    ).SerializeToString()
                    os.write(self._fd, message)
                    self._index.append((position, len(message)))
                    position += len(message)

    def messages(self) -> Iterator[bytes]:
        """The serialized chunks of the model, in order (each read back when it is sent)."""
        for position, length in self._index:
            yield os.pread(self._fd, length, position)
