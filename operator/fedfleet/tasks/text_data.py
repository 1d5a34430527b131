"""A site's text for causal-LM fine-tuning: files read, tokenised, split, batched.

Accepted files (one file, or every `*.jsonl` and `*.txt` under a directory, in path order):
- `.jsonl`: one JSON object a line, `{"prompt": ..., "response": ...}` (the loss counts only
  the response and the end-of-sequence token; put any separator into the prompt) or
  `{"text": ...}` (every token counts). Blank lines are skipped.
- `.txt`: plain text, tokenised whole and cut into blocks of `max_length` tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedfleet.tasks.base import TaskError

IGNORE = -100  # label of a token the loss skips (the prompt, padding)
SUFFIXES = (".jsonl", ".txt")


@dataclass(frozen=True)
class Sequence:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class TextSplits:
    train: list[Sequence]
    test: list[Sequence]


def text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TaskError(f"site text data: {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise TaskError(f"site text data: no {' or '.join('*' + s for s in SUFFIXES)} files under {path}")
    return files


def _record(line: str, where: str) -> tuple[str, str]:
    """(prompt, response) of one JSONL line; a `text` record has an empty prompt."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise TaskError(f"{where}: not JSON: {err.msg}") from None
    if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"]:
        return "", value["text"]
    if (
        isinstance(value, dict)
        and isinstance(value.get("prompt"), str)
        and isinstance(value.get("response"), str)
        and value["response"]
    ):
        return value["prompt"], value["response"]
    raise TaskError(f'{where}: expected {{"prompt": ..., "response": ...}} or {{"text": ...}} with text')


def tokenise_files(files: list[Path], tokenizer: Any, max_length: int) -> list[Sequence]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TaskError("spec.model.source: the tokenizer has no end-of-sequence token")
    sequences: list[Sequence] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".txt":
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            blocks = (ids[start : start + max_length] for start in range(0, len(ids), max_length))
            sequences.extend(Sequence(block, block) for block in blocks if len(block) > 1)
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            prompt, response = _record(line, f"{path}:{number}")
            head = tokenizer(prompt)["input_ids"] if prompt else []
            body = [*tokenizer(response, add_special_tokens=not prompt)["input_ids"], eos]
            ids, labels = (head + body)[:max_length], ([IGNORE] * len(head) + body)[:max_length]
            if any(label != IGNORE for label in labels[1:]):  # something left to predict
                sequences.append(Sequence(ids, labels))
    return sequences


def split(sequences: list[Sequence], test_fraction: float, seed: int, where: str) -> TextSplits:
    """A held-out share of this site's sequences, the same on every start of the client."""
    if len(sequences) < 2:
        raise TaskError(f"site text data: {where} holds {len(sequences)} usable sequences, need at least 2")
    order = np.random.default_rng(seed).permutation(len(sequences))
    n_test = min(len(sequences) - 1, max(1, round(len(sequences) * test_fraction)))
    return TextSplits(
        train=[sequences[i] for i in order[n_test:]], test=[sequences[i] for i in order[:n_test]]
    )


def batches(
    sequences: list[Sequence], batch_size: int, pad_id: int, generator: torch.Generator | None = None
) -> list[dict[str, torch.Tensor]]:
    """Padded batches (shuffled when a generator is given) with attention masks and labels."""
    order = (
        torch.randperm(len(sequences), generator=generator).tolist()
        if generator is not None
        else list(range(len(sequences)))
    )
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[start : start + batch_size]]
        width = max(len(s.input_ids) for s in chunk)
        pad = [width - len(s.input_ids) for s in chunk]
        out.append(
            {
                "input_ids": torch.tensor(
                    [s.input_ids + [pad_id] * p for s, p in zip(chunk, pad, strict=True)]
                ),
                "attention_mask": torch.tensor(
                    [[1] * len(s.input_ids) + [0] * p for s, p in zip(chunk, pad, strict=True)]
                ),
                "labels": torch.tensor([s.labels + [IGNORE] * p for s, p in zip(chunk, pad, strict=True)]),
            }
        )
    return out


def token_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token negative log-likelihood over the labelled tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return total, int((targets != IGNORE).sum())
