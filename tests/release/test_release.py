"""A training's model released to a real OCI registry and pulled back verified: the model's
digest is the lineage head's model, the DSSE attestation verifies with the released key, and a
tampered artifact is refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import oras.oci
import oras.provider
from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.provenance.signing import fingerprint, load_public_key, new_signing_key_pem
from fedfleet.release.oci import attestation_tag

from tests.dataplane.harness import write_manifest


def fedfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfleet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ | {"FEDFLEET_LOG_FORMAT": "json"},
    )


def test_a_released_model_pulls_verified_and_a_tampered_one_is_refused(registry: str, tmp_path: Path) -> None:
    reference = f"{registry}/fedfleet/digits:v1"
    manifest = write_manifest(
        tmp_path / "m.yaml", rounds=1, release={"oci": {"reference": reference, "insecure": True}}
    )
    out = tmp_path / "out"
    run = fedfleet("local", "run", str(manifest), "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "released sha256:" in run.stdout
    lineage = json.loads((out / "metrics.json").read_text())
    head_model = json.loads((out / "state" / "rounds" / "round-000001" / "lineage.json").read_text())

    pulled = tmp_path / "pulled"
    got = fedfleet("model", "pull", reference, "--out", str(pulled), "--verify", "--insecure")
    assert got.returncode == 0, got.stderr
    model = file_digest(pulled / "model.safetensors")
    assert model == lineage["final"]["model_digest"] == head_model["record"]["model_digest"]
    assert f"lineage head {lineage['lineage']['head']}" in got.stdout
    released_key = load_public_key(str(pulled / "lineage-public-key.pem"))
    assert fingerprint(released_key) == lineage["lineage"]["keyFingerprint"]
    assert f"signed by {fingerprint(released_key)}" in got.stdout

    # pinned to another key: refused
    other = tmp_path / "other.pem"
    other.write_bytes(new_signing_key_pem())
    wrong = fedfleet(
        "model",
        "pull",
        reference,
        "--out",
        str(tmp_path / "p2"),
        "--verify",
        "--insecure",
        "--public-key",
        str(other),
    )
    assert wrong.returncode == 1 and "is not the pinned key" in wrong.stderr

    # tampered: another model under the tag, with the original attestation copied to its digest
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("provenance.intoto.json", "MODEL_CARD.md", "lineage-public-key.pem"):
        (tampered / name).write_bytes((pulled / name).read_bytes())
    weights = bytearray((pulled / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01  # one bit of the last weight
    (tampered / "model.safetensors").write_bytes(bytes(weights))
    client = oras.provider.Registry(hostname=registry, insecure=True)
    response = client.push(
        target=reference,
        files=[
            str(tampered / n)
            for n in (
                "model.safetensors",
                "provenance.intoto.json",
                "MODEL_CARD.md",
                "lineage-public-key.pem",
            )
        ],
        disable_path_validation=True,
        quiet=True,
    )
    forged = response.headers["Docker-Content-Digest"]
    released = re.search(r"^released sha256:\w+ to \S+@(sha256:\w+)$", run.stdout, re.M)
    assert released is not None, run.stdout[-2000:]
    copied = client.pull(target=attestation_tag(reference, released[1]), outdir=str(tmp_path / "att"))
    subject = oras.oci.Subject(
        mediaType="application/vnd.oci.image.manifest.v1+json", digest=forged, size=len(response.request.body)
    )
    client.push(
        target=attestation_tag(reference, forged),
        files=copied,
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    refused = fedfleet("model", "pull", reference, "--out", str(tmp_path / "p3"), "--verify", "--insecure")
    assert refused.returncode == 1, refused.stdout
    assert (
        "model.safetensors has digest" in refused.stderr and "the signed statement is about" in refused.stderr
    )
    assert not (tmp_path / "p3" / "model.safetensors").exists()  # nothing unverified left behind
