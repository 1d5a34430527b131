"""The block writer behind checkpoints and SecAgg+ undo journals: what was appended is what the
file holds and what `read` gives back, whatever the lengths and wherever a block ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedfleet.aggregator.direct_io import BLOCK_BYTES, BlockWriter


def pieces(rng: np.random.Generator, lengths: list[int]) -> list[bytes]:
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]


@pytest.mark.parametrize(
    "lengths",
    [
        [],
        [0, 1, 4095],
        [BLOCK_BYTES],
        [BLOCK_BYTES - 1, 2, BLOCK_BYTES],
        [300_001] * 7 + [17],
        [3 * BLOCK_BYTES + 17],
    ],
)
def test_the_file_holds_exactly_the_appended_bytes(tmp_path: Path, lengths: list[int]) -> None:
    data = pieces(np.random.default_rng(len(lengths)), lengths)
    whole = b"".join(data)
    path = tmp_path / "model.bin"
    with BlockWriter.create(path) as out:
        for piece in data:
            out.append(piece)
        assert out.size == len(whole)
        assert out.finish() == len(whole)
    assert path.read_bytes() == whole  # no padding left past the end, nothing lost before it


def test_appended_bytes_read_back_across_blocks_before_the_file_is_finished(tmp_path: Path) -> None:
    """An undo journal is read while its last block is still in memory."""
    whole = b"".join(pieces(np.random.default_rng(7), [250_000] * 10))  # 2.4 blocks, odd edges
    with BlockWriter.unnamed(tmp_path) as journal:
        for begin in range(0, len(whole), 250_000):
            journal.append(memoryview(whole)[begin : begin + 250_000])
        spans = [(0, 10), (BLOCK_BYTES - 3, 6), (2 * BLOCK_BYTES - 1, 100_000), (0, len(whole))]
        for position, length in spans:
            out = bytearray(length)
            journal.read(position, memoryview(out))
            assert bytes(out) == whole[position : position + length]
        with pytest.raises(ValueError, match="were not appended"):
            journal.read(len(whole) - 1, memoryview(bytearray(2)))

        journal.rewind()  # the next upload reuses the file: only its own bytes are there
        journal.append(b"next upload")
        out = bytearray(11)
        journal.read(0, memoryview(out))
        assert out == b"next upload"
        with pytest.raises(ValueError, match="were not appended"):
            journal.read(0, memoryview(bytearray(12)))
    assert not list(tmp_path.iterdir())  # unnamed: nothing left behind


def test_a_block_size_that_is_not_whole_pages_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of"):
        BlockWriter(-1, 1000)
