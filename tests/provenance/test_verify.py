"""`fedfleet lineage verify` on a real aggregator's state: intact passes, every tampering is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.cli import main
from fedfleet.provenance.records import digest_of_fields, field_digests
from fedfleet.provenance.signing import fingerprint, generate_signing_key, load_public_key

from tests.provenance.chain import CLIENTS, ROUNDS, Chain, make_chain


def round_dir(state: Path, number: int) -> Path:
    return state / "rounds" / f"round-{number:06d}"


def lineage(state: Path, number: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((round_dir(state, number) / "lineage.json").read_text())
    return data


def write_lineage(state: Path, number: int, data: dict[str, Any]) -> None:
    (round_dir(state, number) / "lineage.json").write_text(json.dumps(data))


def verify(chain: Chain, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["lineage", "verify", str(chain.state), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_an_untouched_chain_verifies_against_the_published_key_and_head(chain: Chain) -> None:
    status = chain.status
    assert status.lineage_key_fingerprint == fingerprint(load_public_key(str(chain.key)))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedfleet",
            "lineage",
            "verify",
            str(chain.state),
            "--public-key",
            status.lineage_public_key,  # the PEM text as the training's status publishes it
            "--head",
            status.lineage_head,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        f"OK: {ROUNDS + 1} records intact and chained, {ROUNDS + 1} signed by the given public key"
        in run.stdout
    )
    lines = run.stdout.splitlines()
    for number in range(ROUNDS + 1):
        assert any(line.split()[:1] == [str(number)] for line in lines), f"no history line for round {number}"
    assert "anon-" in run.stdout and not any(c in run.stdout for c in CLIENTS), "pseudonyms, not client ids"
    last = lineage(chain.state, ROUNDS)
    assert last["digest"] == status.lineage_head
    assert (
        last["record"]["model_digest"]
        == status.model_digest
        == file_digest(round_dir(chain.state, ROUNDS) / "model.safetensors")
    )
    assert last["record"]["secure_aggregation"]["enabled"] is False and last["record"]["site_count"] == 3


def edit_clients(state: Path) -> None:
    data = lineage(state, 2)
    data["record"]["clients"] = data["record"]["clients"][:2]  # hide a contributor
    write_lineage(state, 2, data)


def edit_and_rehash(state: Path) -> None:
    """An attacker without the key rewrites the record and every digest in it."""
    data = lineage(state, 2)
    data["record"]["selected"] = 2
    data["field_digests"] = field_digests(data["record"])
    data["digest"] = digest_of_fields(data["field_digests"])
    write_lineage(state, 2, data)


def swap_records(state: Path) -> None:
    one, two = lineage(state, 1), lineage(state, 2)
    write_lineage(state, 1, two)
    write_lineage(state, 2, one)


def flip_a_model_byte(state: Path) -> None:
    path = round_dir(state, 3) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def swap_model(state: Path) -> None:
    shutil.copy(round_dir(state, 1) / "model.safetensors", round_dir(state, 2) / "model.safetensors")


def edit_round_json(state: Path) -> None:
    path = round_dir(state, 1) / "round.json"
    record = json.loads(path.read_text())
    record["metrics"]["train_loss"] = 0.001
    path.write_text(json.dumps(record))


TAMPERING: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "edited record field": (edit_clients, ["round 2: field clients: edited"]),
    "edited and re-hashed record": (
        edit_and_rehash,
        [
            "round 2: lineage.json signature: does not verify",
            "round 3: field previous_record_digest: does not link to round 2's record",
        ],
    ),
    "removed record": (
        lambda state: shutil.rmtree(round_dir(state, 2)),
        ["round 3: rounds/round-000003: round 2 missing before it", "round 3: field previous_record_digest"],
    ),
    "removed lineage file": (
        lambda state: (round_dir(state, 2) / "lineage.json").unlink(),
        ["round 2: lineage.json: missing"],
    ),
    "swapped model file": (
        swap_model,
        ["round 2: model.safetensors: digest", "(the file was replaced or edited)"],
    ),
    "edited model bytes": (flip_a_model_byte, ["round 3: model.safetensors: digest"]),
    "reordered records": (
        swap_records,
        ["round 1: lineage.json round: the record describes round 2", "round 2: lineage.json round"],
    ),
    "edited round record": (edit_round_json, ["round 1: round.json: digest"]),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_is_detected_and_placed(
    chain: Chain, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    assert verify(chain, capsys, "--public-key", str(chain.key))[0] == 0
    tamper, expected = TAMPERING[kind]
    tamper(chain.state)
    code, output = verify(chain, capsys, "--public-key", str(chain.key))
    assert code == 1, output
    assert "TAMPERED" in output
    for words in expected:
        assert words in output, f"{words!r} not in:\n{output}"


def test_records_removed_from_the_end_are_caught_by_the_published_head(
    chain: Chain, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(round_dir(chain.state, ROUNDS))
    assert verify(chain, capsys)[0] == 0, "a truncated chain is consistent in itself"
    code, output = verify(chain, capsys, "--head", chain.status.lineage_head)
    assert code == 1
    assert f"round {ROUNDS - 1}: lineage head: the chain ends at" in output
    assert f"the published head is {chain.status.lineage_head}" in output


def test_another_key_is_not_accepted(
    chain: Chain, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = generate_signing_key(tmp_path / "other.pem")
    code, output = verify(chain, capsys, "--public-key", str(tmp_path / "other.pem"))
    assert code == 1
    assert f"round 0: lineage.json signature: made by key {chain.status.lineage_key_fingerprint}" in output
    assert f"not by the given public key {fingerprint(other.public_key())}" in output


def test_without_a_key_the_chain_is_recorded_unsigned_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = make_chain(tmp_path, signed=False, rounds=1)
    assert "lineage.unsigned" in chain.log.read_text()
    assert chain.status.lineage_head and not chain.status.lineage_public_key
    code, output = verify(chain, capsys)
    assert code == 0 and "OK (unsigned): 2 records intact and chained, but not signed" in output
    code, output = verify(chain, capsys, "--require-signature")
    assert code == 1 and "round 0: lineage.json signature: unsigned, but a signature is required" in output
