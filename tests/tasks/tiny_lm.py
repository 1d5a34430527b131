"""A tiny open-weights causal LM and site text, built on the spot: nothing is downloaded.

The text is a small templated language of facts (who lives where, eats what); a two-layer
Llama learns its structure within a few LoRA steps, so a falling held-out perplexity shows
that federated LoRA rounds train.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

NAMES = [f"person{i}" for i in range(24)]
CITIES = ["oslo", "lima", "pune", "kyiv", "nice", "bern", "cork", "riga", "baku", "faro"]
FOODS = ["rice", "bread", "soup", "figs", "beans", "fish", "plums", "nuts"]
COLOURS = ["red", "blue", "green", "black", "white", "amber"]
THINGS = ["bike", "hat", "kite", "boat", "lamp"]
SPECIALS = ["[UNK]", "[PAD]", "[BOS]", "[EOS]"]


def facts(index: int) -> tuple[str, str, str, str, str]:
    name = NAMES[index % len(NAMES)]
    return (
        name,
        CITIES[(index * 7) % len(CITIES)],
        FOODS[(index * 5) % len(FOODS)],
        COLOURS[(index * 3) % len(COLOURS)],
        THINGS[index % len(THINGS)],
    )


def prompt_records(count: int, offset: int) -> list[dict[str, str]]:
    records = []
    for i in range(count):
        name, city, food, _, _ = facts(i + offset)
        if i % 2:
            records.append({"prompt": f"where does {name} live ?", "response": f"{name} lives in {city} ."})
        else:
            records.append(
                {"prompt": f"what does {name} eat ?", "response": f"{name} eats {food} every day ."}
            )
    return records


def sentences(count: int, offset: int) -> list[str]:
    out = []
    for i in range(count):
        name, city, food, colour, thing = facts(i + offset)
        out.append(f"{name} has a {colour} {thing} and lives in {city} where {name} eats {food} .")
    return out


def write_site_text(data_dir: Path, sites: list[str], count: int = 120) -> None:
    """Three formats across the sites: prompt/response JSONL, text JSONL, plain text."""
    for number, site in enumerate(sites):
        site_dir = data_dir / site
        site_dir.mkdir(parents=True)
        kind = number % 3
        if kind == 0:
            lines = [json.dumps(r) for r in prompt_records(count, number * 11)]
            (site_dir / "chat.jsonl").write_text("\n".join(lines) + "\n")
        elif kind == 1:
            lines = [json.dumps({"text": s}) for s in sentences(count, number * 11)]
            (site_dir / "notes.jsonl").write_text("\n".join(lines) + "\n")
        else:
            (site_dir / "book.txt").write_text("\n".join(sentences(count, number * 11)) + "\n")


def vocabulary_text() -> list[str]:
    return sentences(len(NAMES) * 4, 0) + [
        f"{r['prompt']} {r['response']}" for r in prompt_records(len(NAMES) * 4, 0)
    ]


def build_tiny_model(directory: Path, seed: int = 0, hidden: int = 64) -> Path:
    """A random two-layer Llama and a word-level tokenizer for the language, saved like a hub model."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(vocabulary_text(), trainers.WordLevelTrainer(special_tokens=SPECIALS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory, max_shard_size="200KB")  # two weight files
    fast.save_pretrained(directory)
    return directory
