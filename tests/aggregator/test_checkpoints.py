"""Checkpoints survive kill -9 at any instant: a round directory is whole or absent."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from fedfleet.aggregator.checkpoints import CheckpointStore, file_digest, model_layout, read_tensor

from tests.crashes import ROUNDS_PER_RUN, kill_9_mid_writes

WRITER = """
import sys, numpy as np
from pathlib import Path
from fedfleet.aggregator.checkpoints import CheckpointStore
store = CheckpointStore(Path(sys.argv[1]))
start = (store.latest().round + 1) if store.latest() else 0
for n in range(start, start + int(sys.argv[2])):
    weights = {"w": np.full(1_500_000, n, dtype=np.float32), "b": np.full(7, n, dtype=np.float32)}
    store.save(n, weights, {}, {"note": n})
"""


def test_kill_9_during_writes_never_leaves_a_partial_round(tmp_path: Path) -> None:
    rng = random.Random(7)
    seen_rounds = 0
    for _ in range(6):
        writer = [sys.executable, "-c", WRITER, str(tmp_path), str(ROUNDS_PER_RUN)]
        kill_9_mid_writes(writer, tmp_path / "rounds", seen_rounds + 2, rng)
        store = CheckpointStore(tmp_path)  # cleans temporary leftovers like the aggregator does
        done = store.completed()
        assert [c.round for c in done] == list(range(len(done))), "no gap, no repeat"
        for checkpoint in done[-3:]:
            weights = checkpoint.load_weights()
            assert np.all(weights["w"] == checkpoint.round) and checkpoint.record["note"] == checkpoint.round
            assert file_digest(checkpoint.model_path) == checkpoint.record["model_digest"]
        assert not list((tmp_path / "rounds").glob(".tmp-*"))
        assert len(done) >= seen_rounds + 2, "a finished round survives the kill"
        seen_rounds = len(done)


def test_a_round_is_never_overwritten(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(0, {"w": np.zeros(3, np.float32)}, {}, {})
    with pytest.raises(FileExistsError):
        store.save(0, {"w": np.ones(3, np.float32)}, {}, {})
    assert json.loads((tmp_path / "rounds" / "round-000000" / "round.json").read_text())["round"] == 0


def test_the_recorded_digest_is_the_written_files_whatever_the_tensors(tmp_path: Path) -> None:
    """Hashed while written: it must still be the digest of the bytes on disk (pins, lineage)."""
    weights = {
        "z": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
        "a": np.ones(5, np.float16),
        "e": np.ones(0, np.float32),
        "q": np.arange(9, dtype=np.uint8),
    }
    checkpoint = CheckpointStore(tmp_path).save(0, weights, {}, {})
    assert checkpoint.record["model_digest"] == file_digest(checkpoint.model_path)
    assert {k: v.tolist() for k, v in checkpoint.load_weights().items()} == {
        k: v.tolist() for k, v in weights.items()
    }


def test_tensors_read_into_one_reused_buffer_are_the_checkpoints_and_a_short_file_is_refused(
    tmp_path: Path,
) -> None:
    """The engine builds each round's model in one buffer, tensor after tensor."""
    weights = {
        "big": np.random.default_rng(5).standard_normal((300, 1001)).astype(np.float32),
        "small": np.arange(7, dtype=np.int64),
        "half": np.ones(3, np.float16),
    }
    checkpoint = CheckpointStore(tmp_path).save(0, weights, {}, {})
    buffer = np.empty(weights["big"].nbytes, np.uint8)
    for slot, begin in checkpoint.tensor_offsets():
        tensor = read_tensor(checkpoint.model_path, slot, begin, buffer)
        expected = weights[slot.name]
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape
        np.testing.assert_array_equal(tensor, expected)
        assert np.shares_memory(tensor, buffer)
        fresh = read_tensor(checkpoint.model_path, slot, begin)
        np.testing.assert_array_equal(fresh, expected)
        assert not np.shares_memory(fresh, buffer)

    layout, offsets = model_layout(checkpoint.model_path)
    last = max(offsets, key=offsets.__getitem__)
    with checkpoint.model_path.open("r+b") as handle:  # cut under a reader that read the header
        handle.truncate(checkpoint.model_path.stat().st_size - 4)
    with pytest.raises(OSError, match="the file ends inside tensor"):
        read_tensor(checkpoint.model_path, layout.slots[last], offsets[last], buffer)
