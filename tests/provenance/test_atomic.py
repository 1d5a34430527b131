"""A lineage record is part of its checkpoint: kill -9 at any instant leaves both or neither."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from fedfleet.aggregator.checkpoints import CheckpointStore
from fedfleet.provenance.signing import generate_signing_key, load_public_key
from fedfleet.provenance.verify import verify_state

from tests.crashes import ROUNDS_PER_RUN, kill_9_mid_writes
from tests.dataplane.harness import write_manifest

# What the engine does per round (engine.RoundEngine: save with the ledger's attachment, then advance).
WRITER = """
import sys, numpy as np
from pathlib import Path
from fedfleet.aggregator.checkpoints import CheckpointStore
from fedfleet.api.load import load_training
from fedfleet.provenance.ledger import Ledger
from fedfleet.provenance.signing import load_signing_key
state, manifest, key = (Path(a) for a in sys.argv[1:4])
rounds = int(sys.argv[4])
store = CheckpointStore(state)
ledger = Ledger("tiny", load_training(manifest).spec, state, load_signing_key(key))
weights = lambda n: {"w": np.full(1_500_000, n, dtype=np.float32)}
latest = store.latest() or store.save(0, weights(0), {}, {"kind": "initial"}, ledger.attach)
ledger.advance(latest.path, latest.record["model_digest"])
for n in range(latest.round + 1, latest.round + 1 + rounds):
    record = {"participants": ["site-a-0", "site-b-1"], "reported": ["site-a-0", "site-b-1"]}
    checkpoint = store.save(n, weights(n), {}, record, ledger.attach)
    ledger.advance(checkpoint.path, checkpoint.record["model_digest"])
"""


def test_kill_9_never_leaves_a_checkpoint_without_its_record_and_the_chain_resumes(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "manifest.yaml", lineage={"pseudonymize": True})
    generate_signing_key(tmp_path / "key.pem")
    public = load_public_key(str(tmp_path / "key.pem"))
    state = tmp_path / "state"
    rng = random.Random(11)
    seen = 0
    for _ in range(4):
        writer = [sys.executable, "-c", WRITER, str(state), str(manifest), str(tmp_path / "key.pem")]
        kill_9_mid_writes([*writer, str(ROUNDS_PER_RUN)], state / "rounds", seen + 2, rng)
        CheckpointStore(state)  # removes a crash's temporary directory, as the aggregator does on start
        result = verify_state(state, public, require_signature=True)
        assert result.ok, "\n".join(map(str, result.problems))
        assert len(result.records) >= seen + 2, "every finished round keeps its record"
        seen = len(result.records)
    pseudonyms = {c for r in result.records for c in r["clients"]}
    assert len(pseudonyms) == 2, "the salt survives restarts: one pseudonym per client"
