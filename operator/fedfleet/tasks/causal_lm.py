"""Built-in `causal-lm-lora`: LoRA post-training of an open-weights causal LM on each site's text.

`spec.model.source` names the base model (a local directory, such as a mounted volume, or a
Hugging Face hub id found in the local cache) and `spec.model.digest` must pin its weights
(`fedfleet.tasks.pretrained`); a client refuses to train on anything else. The base stays
frozen on every client; only the LoRA adapter trains, travels and is averaged, so a round moves
the adapter's bytes, not the model's, and the aggregator's checkpoints are adapters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from fedfleet.tasks import lora, pretrained
from fedfleet.tasks.base import SiteContext, Task, TaskError, TrainContext, Weights
from fedfleet.tasks.text_data import TextSplits, batches, split, text_files, token_nll, tokenise_files
from fedfleet.tasks.training import proximal_anchors, proximal_term


class CausalLMConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    rank: int = Field(default=8, ge=1, le=1024, description="LoRA rank r.")
    alpha: int = Field(default=16, ge=1, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Module names that get adapters, or all-linear.",
    )
    data: str = Field(
        default="",
        description="Site text (file or directory; {site} is replaced by the site name); "
        "empty: the site's data volume.",
    )
    test_fraction: float = Field(default=0.1, gt=0, lt=1, description="Held-out share of each site's text.")
    split_seed: int = Field(default=42, ge=0, description="Seed of the held-out split.")
    max_length: int = Field(default=512, ge=2, le=1_000_000, description="Tokens per sequence at most.")
    batch_size: int = Field(default=8, ge=1)
    local_epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the site's text a round.")
    max_steps: int = Field(default=0, ge=0, description="Optimizer steps a round at most; 0: no cap.")
    learning_rate: float = Field(default=2e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping of each step.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        default="float32", description="Dtype of the frozen base weights; the adapter trains in float32."
    )
    allow_download: bool = Field(
        default=False, description="Let a hub id be downloaded when it is not in the local cache."
    )


@dataclass(frozen=True)
class SiteText:
    splits: TextSplits
    pad_id: int


class CausalLMLoRATask(Task[CausalLMConfig]):
    Config = CausalLMConfig
    loads_base_model = True

    def _base_dir(self) -> Path:
        return pretrained.resolve_source(self.model_spec.source, self.config.allow_download)

    def _wrap(self, base: torch.nn.Module) -> torch.nn.Module:
        c = self.config
        model: torch.nn.Module = lora.wrap(base, c.rank, c.alpha, c.dropout, c.target_modules)
        return model

    def release_files(self) -> dict[str, bytes]:
        c = self.config
        config = lora.adapter_config(c.rank, c.alpha, c.dropout, c.target_modules, self.model_spec.source)
        return {"adapter_config.json": json.dumps(config, indent=2, default=str).encode()}

    def build_model(self, seed: int) -> torch.nn.Module:
        directory = self._base_dir()
        pretrained.verify_digest(directory, self.model_spec.digest)
        model = self._wrap(pretrained.load_causal_lm(directory, self.config.dtype))
        self.load_federated_weights(model, self.initial_weights_of(model, seed))
        return model

    @staticmethod
    def initial_weights_of(model: torch.nn.Module, seed: int) -> Weights:
        shapes = {name: tuple(p.shape) for name, p in lora.adapter_parameters(model).items()}
        return lora.initial_adapter(shapes, seed)

    def initial_weights(self, seed: int) -> Weights:
        """The aggregator's round-0 adapter: shapes from the base's config.json on the meta device,
        so the aggregator reads no base weights and needs no accelerator."""
        if not self.model_spec.digest:
            raise TaskError("spec.model.digest: causal-lm-lora needs the base model's weights pinned")
        from transformers import AutoModelForCausalLM

        config = pretrained.load_model_config(self._base_dir())
        with torch.device("meta"):
            model = self._wrap(AutoModelForCausalLM.from_config(config))
        return self.initial_weights_of(model, seed)

    def federated_weights(self, model: torch.nn.Module) -> Weights:
        return lora.read_adapter(model)

    def load_federated_weights(self, model: torch.nn.Module, weights: Weights) -> None:
        lora.write_adapter(model, weights)

    def load_data(self, site: SiteContext) -> SiteText:
        if self.config.data:
            path = Path(self.config.data.replace("{site}", site.site))
        elif site.data_dir is not None:
            path = site.data_dir
        else:
            raise TaskError(
                f"site {site.site}: no text data; set spec.task.config.data or give the site a data "
                "volume (FederationSite spec.dataVolumeClaim)"
            )
        tokenizer = pretrained.load_tokenizer(self._base_dir())
        sequences = tokenise_files(text_files(path), tokenizer, self.config.max_length)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return SiteText(
            split(sequences, self.config.test_fraction, self.config.split_seed, str(path)), pad_id
        )

    def train(
        self, model: torch.nn.Module, data: SiteText, ctx: TrainContext
    ) -> tuple[int, dict[str, float]]:
        c = self.config
        params = lora.adapter_parameters(model)
        optimizer = torch.optim.AdamW(params.values(), lr=c.learning_rate, weight_decay=c.weight_decay)
        anchors = proximal_anchors(params, ctx)
        generator = torch.Generator().manual_seed(ctx.seed)
        model.train()
        steps = seen = tokens = 0
        total = 0.0
        for _ in range(c.local_epochs):
            total, tokens = 0.0, 0  # the loss reported is the last epoch's
            for batch in batches(data.splits.train, c.batch_size, data.pad_id, generator):
                nll, count = token_nll(model, {k: v.to(ctx.device) for k, v in batch.items()})
                loss = nll / max(count, 1)
                if anchors:
                    loss = loss + proximal_term(params, anchors, ctx.proximal_mu)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params.values(), c.max_grad_norm)
                optimizer.step()
                total, tokens = total + float(nll.detach()), tokens + count
                steps, seen = steps + 1, seen + len(batch["input_ids"])
                if c.max_steps and steps >= c.max_steps:
                    break
            if c.max_steps and steps >= c.max_steps:
                break
        return min(seen, len(data.splits.train)), {"loss": total / max(tokens, 1)}

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, data: SiteText, device: torch.device
    ) -> tuple[int, dict[str, float]]:
        """Mean next-token loss over the held-out split's labelled tokens, and its perplexity."""
        model.eval()
        total, tokens = 0.0, 0
        for batch in batches(data.splits.test, self.config.batch_size, data.pad_id):
            nll, count = token_nll(model, {k: v.to(device) for k, v in batch.items()})
            total, tokens = total + float(nll), tokens + count
        loss = total / max(tokens, 1)
        return len(data.splits.test), {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
