"""Open-weights base models: where `spec.model.source` points, its digest, and loading it.

A source is a local model directory (a mounted volume, say) or a Hugging Face hub id. A hub id
is looked up in the local Hugging Face cache only; it is downloaded only when the task's
config opts in (`allowDownload: true`), so nothing reaches the network by default.

The digest pins the weights: `sha256:` and the sha256 of the `sha256sum` listing of the
directory's top-level `*.safetensors` files, sorted by name (byte order) — what
`(cd DIR && LC_ALL=C sh -c 'sha256sum *.safetensors') | sha256sum` prints. Configuration and
tokenizer files are not part of it; weights in other formats are never loaded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from fedfleet.aggregator.checkpoints import file_digest
from fedfleet.tasks.base import TaskError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
WEIGHTS_GLOB = "*.safetensors"


def resolve_source(source: str, allow_download: bool) -> Path:
    """The local directory of `spec.model.source`; a hub id resolves to its cached snapshot."""
    if not source:
        raise TaskError("spec.model.source: give the base model's directory or hub id")
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise TaskError(
            f"spec.model.source: {path} is a file; give the model's directory "
            "(config.json, *.safetensors, tokenizer files) or a hub id"
        )
    if path.is_absolute() or source.startswith(".") or not HUB_ID.match(source):
        raise TaskError(f"spec.model.source: {path} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                source,
                local_files_only=not allow_download,
                allow_patterns=["*.json", WEIGHTS_GLOB, "*.model", "*.txt", "*.tiktoken"],
            )
        )
    except LocalEntryNotFoundError:
        raise TaskError(
            f"spec.model.source: {source!r} is neither a local directory nor in the local Hugging Face "
            "cache (HF_HOME); nothing is downloaded unless spec.task.config.allowDownload is true"
        ) from None
    except Exception as err:  # the hub refused or could not be reached, with allowDownload
        raise TaskError(f"spec.model.source: cannot fetch {source!r}: {err}") from None


def weight_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob(WEIGHTS_GLOB), key=lambda p: p.name.encode())
    if not files:
        raise TaskError(
            f"spec.model.source: no {WEIGHTS_GLOB} files in {directory}; only safetensors weights are loaded"
        )
    return files


def base_model_digest(directory: Path) -> str:
    """The digest `spec.model.digest` pins (see the module docstring for its definition)."""
    listing = "".join(
        f"{file_digest(path).removeprefix('sha256:')}  {path.name}\n" for path in weight_files(directory)
    )
    return f"sha256:{hashlib.sha256(listing.encode()).hexdigest()}"


def verify_digest(directory: Path, pinned: str) -> None:
    """Refuse to train on weights other than the pinned ones (or on unpinned ones)."""
    actual = base_model_digest(directory)
    if not pinned:
        raise TaskError(f"spec.model.digest: the base model must be pinned; {directory} has digest {actual}")
    if actual != pinned:
        raise TaskError(
            f"spec.model.digest: the base model in {directory} has digest {actual}, "
            f"the manifest pins {pinned}; refusing to train on other weights"
        )


def quiet_transformers() -> None:
    """No progress bars or advisory warnings in client logs (they are JSON lines)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_causal_lm(directory: Path, dtype: str) -> Any:
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        return AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, dtype=dtype
        )
    except (OSError, ValueError) as err:
        raise TaskError(f"spec.model.source: {directory} is not a loadable causal LM: {err}") from None


def load_model_config(directory: Path) -> Any:
    from transformers import AutoConfig

    quiet_transformers()
    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TaskError(f"spec.model.source: cannot read {directory}/config.json: {err}") from None


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TaskError(f"spec.model.source: no usable tokenizer in {directory}: {err}") from None
