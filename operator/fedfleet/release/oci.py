"""OCI registry transport (`oras`): the release as one artifact, its DSSE attestation as a second
artifact whose `subject` is the first (OCI 1.1), tagged `sha256-<hex>.att` so registries
without the referrers API (distribution 2.x) find it too."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.release.bundle import Bundle
from fedfleet.release.dsse import MAX_ENVELOPE_BYTES, ReleaseError

ARTIFACT_TYPE = "application/vnd.fedfleet.model.v1+json"
ATTESTATION_TYPE = "application/vnd.dsse.envelope.v1+json"
MEDIA_TYPES = {
    "model.safetensors": "application/vnd.fedfleet.model.safetensors",
    "adapter_config.json": "application/json",
    "provenance.intoto.json": "application/vnd.in-toto+json",
    "MODEL_CARD.md": "text/markdown",
    "lineage-public-key.pem": "application/x-pem-file",
}
ENVELOPE_FILE = "attestation.dsse.json"
MAX_FILES = 16  # a release holds a handful of files; a manifest listing more is not ours


@dataclass(frozen=True)
class Pulled:
    manifest_digest: str
    files: dict[str, Path]  # name -> downloaded file, each checked against the manifest's digest
    envelope: bytes
    annotations: dict[str, str]


def _registry(reference: str, insecure: bool) -> Any:
    import oras.provider  # the registry client, imported only when a release is pushed or pulled

    return oras.provider.Registry(hostname=reference.split("/", 1)[0], insecure=insecure)


def _digest_of(response: Any, what: str) -> str:
    digest = response.headers.get("Docker-Content-Digest", "")
    if not digest.startswith("sha256:"):
        raise ReleaseError(f"the registry did not say the digest of the {what} it stored")
    return str(digest)


def repository(reference: str) -> str:
    """host[:port]/path of a reference, without its tag or digest."""
    name = reference.split("@", 1)[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def attestation_tag(reference: str, manifest_digest: str) -> str:
    return f"{repository(reference)}:{manifest_digest.replace(':', '-')}.att"


def _manifest(registry: Any, reference: str) -> tuple[bytes, str]:
    """The manifest's bytes as stored, and their digest (what a subject and a pin refer to)."""
    response = registry.do_request(
        f"{registry.prefix}://{registry.get_container(reference).manifest_url()}",
        "GET",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    if response.status_code != 200:
        raise ReleaseError(f"{reference}: the registry answered {response.status_code}")
    body = bytes(response.content)
    if len(body) > MAX_ENVELOPE_BYTES:
        raise ReleaseError(f"{reference}: manifest larger than {MAX_ENVELOPE_BYTES} bytes")
    return body, f"sha256:{hashlib.sha256(body).hexdigest()}"


def push(reference: str, bundle: Bundle, insecure: bool = False) -> str:
    """Pushes the artifact and its attestation; returns the artifact's manifest digest."""
    with _registry_errors(reference):
        return _push(reference, bundle, insecure)


def pull(reference: str, out_dir: Path, insecure: bool = False) -> Pulled:
    with _registry_errors(reference):
        return _pull(reference, out_dir, insecure)


@contextlib.contextmanager
def _registry_errors(reference: str) -> Iterator[None]:
    """The registry client's own failures (connection, HTTP status, schema) as one ReleaseError."""
    import requests

    try:
        yield
    except (requests.RequestException, ValueError, KeyError, OSError) as err:
        if isinstance(err, ReleaseError):
            raise
        raise ReleaseError(f"{reference}: {type(err).__name__}: {str(err)[:300]}") from None


def _push(reference: str, bundle: Bundle, insecure: bool) -> str:
    import oras.oci

    registry = _registry(reference, insecure)
    files = [
        f"{bundle.directory / name}:{MEDIA_TYPES.get(name, 'application/octet-stream')}"
        for name in bundle.files
    ]
    annotations = {
        "org.opencontainers.artifact.type": ARTIFACT_TYPE,
        "io.fedfleet.model.digest": bundle.model_digest,
        "io.fedfleet.lineage.head": bundle.lineage_head,
    }
    response = registry.push(
        target=reference,
        files=files,
        manifest_annotations=annotations,
        disable_path_validation=True,
        quiet=True,
    )
    digest = _digest_of(response, "release")
    body, stored = _manifest(registry, f"{repository(reference)}@{digest}")
    if stored != digest:
        raise ReleaseError(f"{reference}: the registry stored {stored}, it said {digest}")
    media_type = json.loads(body).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
    subject = oras.oci.Subject(mediaType=media_type, digest=digest, size=len(body))
    with tempfile.TemporaryDirectory() as work:
        envelope = Path(work) / ENVELOPE_FILE
        envelope.write_text(json.dumps(bundle.envelope))
        registry.push(
            target=attestation_tag(reference, digest),
            files=[f"{envelope}:{ATTESTATION_TYPE}"],
            manifest_annotations={"io.fedfleet.attestation.subject": digest},
            subject=subject,
            disable_path_validation=True,
            quiet=True,
        )
    return digest


def _download_layers(
    registry: Any, reference: str, manifest: dict[str, Any], out_dir: Path
) -> dict[str, Path]:
    layers = manifest.get("layers") or []
    if not isinstance(layers, list) or not 0 < len(layers) <= MAX_FILES:
        raise ReleaseError(
            f"{reference}: a release has 1 to {MAX_FILES} files, the manifest lists {len(layers)}"
        )
    files: dict[str, Path] = {}
    for layer in layers:
        name = str((layer.get("annotations") or {}).get("org.opencontainers.image.title", ""))
        if not name or "/" in name or name.startswith(".") or name in files:
            raise ReleaseError(f"{reference}: a layer without a plain, unique file name ({name!r})")
        target = out_dir / name
        registry.download_blob(reference, layer["digest"], str(target))
        if file_digest(target) != layer["digest"]:
            raise ReleaseError(f"{reference}: {name} does not match its digest in the manifest")
        files[name] = target
    return files


def _pull(reference: str, out_dir: Path, insecure: bool) -> Pulled:
    registry = _registry(reference, insecure)
    out_dir.mkdir(parents=True, exist_ok=True)
    body, digest = _manifest(registry, reference)
    manifest = json.loads(body)
    files = _download_layers(registry, reference, manifest, out_dir)
    tag = attestation_tag(reference, digest)
    try:
        attestation = json.loads(_manifest(registry, tag)[0])
    except ReleaseError as err:
        raise ReleaseError(f"{reference}: no attestation for {digest}: {err}") from None
    if (attestation.get("subject") or {}).get("digest") != digest:
        raise ReleaseError(f"{tag}: the attestation's subject is not {digest}")
    with tempfile.TemporaryDirectory() as work:
        envelopes = _download_layers(registry, tag, attestation, Path(work))
        raw = next(iter(envelopes.values())).read_bytes()
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise ReleaseError(f"{tag}: attestation larger than {MAX_ENVELOPE_BYTES} bytes")
    return Pulled(digest, files, raw, dict(manifest.get("annotations") or {}))
