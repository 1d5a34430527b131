"""Files the aggregator writes once and reads rarely, written past the page cache.

A round writes a model's worth of checkpoint and, with SecAgg+, an upload's worth of undo
journal per client. Through the page cache each written page is dirty until writeback, and the
kernel holds writers back to its estimate of the disk's write speed: on the reference machine a
new 40 MB file took 0.3 s to write, against 0.03 s with O_DIRECT (the disk takes 1.3 GB/s).
So bytes are appended here into one page-aligned block and written in whole blocks with
O_DIRECT, as databases write their logs. Where the file system refuses O_DIRECT (tmpfs, some
FUSE mounts) the same blocks go through the page cache instead: slower, never wrong.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import weakref
from types import TracebackType

BLOCK_BYTES = 1 << 20  # per write: large enough that the disk, not the calls, sets the pace
_DIRECT = getattr(os, "O_DIRECT", 0)


class BlockWriter:
    """Bytes appended in order to an open file from offset 0, written in whole blocks; the
    last, partial block is written padded and the file cut to the appended size by `finish`.

    `read` gives back any appended bytes (from the file or from the block not yet written), so
    an undo journal can be read before it is finished. `rewind` starts over in the same file,
    writing over its blocks: the file is reused, upload after upload."""

    def __init__(self, fd: int, block_bytes: int = BLOCK_BYTES) -> None:
        if block_bytes <= 0 or block_bytes % mmap.PAGESIZE:
            raise ValueError(f"block_bytes must be a positive multiple of {mmap.PAGESIZE}")
        self.fd = fd
        self._close_fd = weakref.finalize(self, os.close, fd)  # also when dropped unclosed
        self._block = mmap.mmap(-1, block_bytes)  # page-aligned, as O_DIRECT wants
        self._view = memoryview(self._block)
        self._written = 0  # bytes in the file: whole blocks
        self._filled = 0  # bytes in the block after them
        self.direct = _set_direct(fd, True)

    @classmethod
    def create(cls, path: os.PathLike[str] | str) -> BlockWriter:
        """A new file at `path`, opened write-only (an existing one is truncated)."""
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))

    @classmethod
    def unnamed(cls, directory: os.PathLike[str] | str) -> BlockWriter:
        """An unnamed file in `directory` (O_TMPFILE): nothing is left behind by a crash."""
        return cls(os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600))

    @property
    def size(self) -> int:
        return self._written + self._filled

    def append(self, data: memoryview | bytes) -> None:
        """Take `data` (copied into the block, which is written once full). An OSError leaves
        the bytes appended before this call readable."""
        source = memoryview(data).cast("B")
        taken = 0
        while taken < len(source):
            room = len(self._view) - self._filled
            part = min(room, len(source) - taken)
            self._view[self._filled : self._filled + part] = source[taken : taken + part]
            self._filled += part
            taken += part
            if self._filled == len(self._view):
                self._write_block(len(self._view))
                self._written += self._filled
                self._filled = 0

    def read(self, position: int, out: memoryview) -> None:
        """Fill `out` with the appended bytes from `position` on."""
        target = out.cast("B")
        end = position + len(target)
        if position < 0 or end > self.size:
            raise ValueError(f"bytes [{position}, {end}) were not appended (size {self.size})")
        on_disk = max(0, min(end, self._written) - position)
        if on_disk:
            if self.direct:  # an O_DIRECT read wants alignment: read through the page cache
                _set_direct(self.fd, False)
            try:
                if os.preadv(self.fd, [target[:on_disk]], position) != on_disk:
                    raise OSError("the file is shorter than what was written to it")
            finally:
                if self.direct:
                    _set_direct(self.fd, True)
        if on_disk < len(target):
            begin = position + on_disk - self._written
            target[on_disk:] = self._view[begin : begin + len(target) - on_disk]

    def rewind(self) -> None:
        self._written = self._filled = 0

    def finish(self) -> int:
        """Write the last block and cut the file to the appended size; returns that size."""
        size = self.size
        if self._filled:
            padded = -(-self._filled // mmap.PAGESIZE) * mmap.PAGESIZE
            self._view[self._filled : padded] = bytes(padded - self._filled)
            self._write_block(padded)
        os.ftruncate(self.fd, size)
        return size

    def close(self) -> None:
        self._view.release()
        self._block.close()
        self._close_fd()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write_block(self, length: int) -> None:
        try:
            written = os.pwrite(self.fd, self._view[:length], self._written)
        except OSError as err:
            if err.errno != errno.EINVAL or not self.direct:
                raise
            # the file system took the flag but not the write: the page cache it is
            self.direct = _set_direct(self.fd, False)
            written = os.pwrite(self.fd, self._view[:length], self._written)
        if written != length:
            raise OSError(f"short write: {written} of {length} bytes")


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for an open file; whether it is on afterwards."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | _DIRECT if on else flags & ~_DIRECT
    if _DIRECT and wanted != flags:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
        except OSError:
            return bool(flags & _DIRECT)
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & _DIRECT)
