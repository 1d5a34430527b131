"""`causal-lm-lora`: federated LoRA post-training of a pinned open-weights causal LM.

The base model is a tiny random Llama built in the test (`tiny_lm`), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from fedfleet.api.training import FederatedTraining, ModelSpec, TaskSpec
from fedfleet.models import ModelSourceError, initial_weights
from fedfleet.provenance.policy import REFUSED_EXIT_CODE
from fedfleet.tasks.base import SiteContext, TaskError, load_task
from fedfleet.tasks.pretrained import base_model_digest
from safetensors.numpy import load_file

from tests.dataplane.harness import write_manifest
from tests.local.test_local_run import finish, local_run
from tests.tasks.tiny_lm import build_tiny_model, write_site_text

SITES = ["site-a", "site-b", "site-c"]
LORA = {"rank": 4, "alpha": 16, "dropout": 0.0, "targetModules": "all-linear", "maxLength": 32}
TRAIN = {"batchSize": 16, "learningRate": 0.01, "localEpochs": 2}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


def lora_task(base: Path | str, digest: str, **config: object) -> tuple[TaskSpec, ModelSpec]:
    return TaskSpec(name="causal-lm-lora", config=LORA | config), ModelSpec(source=str(base), digest=digest)


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e["event"] == event]


def test_three_sites_lower_held_out_perplexity_and_upload_only_the_adapter(
    base: Path, tmp_path: Path
) -> None:
    write_site_text(tmp_path / "text", SITES)
    digest = base_model_digest(base)
    manifest = write_manifest(
        tmp_path / "lora.yaml",
        name="lora",
        rounds=3,
        minClients=3,
        roundTimeoutSeconds=120,
        task={"name": "causal-lm-lora", "config": LORA | TRAIN | {"data": str(tmp_path / "text" / "{site}")}},
        model={"source": str(base), "digest": digest},
    )  # secure aggregation stays on (the default)
    out = tmp_path / "out"
    finish(local_run(manifest, out))

    state = out / "state"
    first = json.loads((state / "evaluations" / "version-000000.json").read_text())["metrics"]  # initial
    last = json.loads((state / "evaluations" / "version-000003.json").read_text())["metrics"]
    assert last["eval_perplexity"] < first["eval_perplexity"] / 1.5, (first, last)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["eval_loss"] == pytest.approx(last["eval_loss"])
    assert metrics["final"]["eval_loss"] < first["eval_loss"]

    adapter = load_file(str(state / "rounds" / "round-000003" / "model.safetensors"))
    assert adapter and all(".lora_A." in name or ".lora_B." in name for name in adapter)
    adapter_values = sum(t.size for t in adapter.values())
    base_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    accepted = log_events(out / "logs" / "aggregator.log", "update.accepted")
    assert len(accepted) == 3 * len(SITES)
    # SecAgg+ uploads the adapter as masked uint32 words, plus one word for the example weight
    assert {e["bytes"] for e in accepted} == {4 * (adapter_values + 1)}
    assert 4 * (adapter_values + 1) * 5 < base_bytes, "a round moves the adapter, not the model"
    for number in range(4):
        record = json.loads((state / "rounds" / f"round-{number:06d}" / "round.json").read_text())
        assert record["base_model_digest"] == digest

    # the global artifact is a PEFT adapter of that base: PEFT loads it under its own names
    from peft import LoraConfig, PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    adapter_dir = tmp_path / "adapter"
    LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM").save_pretrained(
        adapter_dir
    )
    shutil.copy(
        state / "rounds" / "round-000003" / "model.safetensors", adapter_dir / "adapter_model.safetensors"
    )
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)
    peft_state = get_peft_model_state_dict(loaded)
    assert peft_state.keys() == adapter.keys()
    for name, tensor in peft_state.items():
        np.testing.assert_array_equal(tensor.numpy(), adapter[name])


def test_weights_other_than_the_pinned_digest_are_refused(base: Path) -> None:
    actual = base_model_digest(base)
    pinned = "sha256:" + "0" * 64
    task = load_task(*lora_task(base, pinned))
    with pytest.raises(TaskError) as refused:
        task.build_model(0)
    message = str(refused.value)
    assert message.startswith("spec.model.digest:")
    assert actual in message and pinned in message

    with pytest.raises(TaskError, match=rf"spec.model.digest: the base model must be pinned; .* {actual}"):
        load_task(*lora_task(base, "")).build_model(0)


def test_a_client_process_given_other_weights_refuses_once_with_the_reason(
    base: Path, tmp_path: Path
) -> None:
    """Exit 78 (a refusal the operator does not retry), the reason on stderr and as the pod's
    termination message, and no traceback."""
    pinned = "sha256:" + "0" * 64
    write_site_text(tmp_path / "text", ["site-a"], count=20)
    manifest = write_manifest(
        tmp_path / "llm.yaml",
        task={"name": "causal-lm-lora", "config": LORA | {"data": str(tmp_path / "text" / "{site}")}},
        model={"source": str(base), "digest": pinned},
    )
    termination = tmp_path / "termination-log"
    client = ["client", "--manifest", str(manifest), "--aggregator", "127.0.0.1:1"]
    done = subprocess.run(
        [sys.executable, "-m", "fedfleet", *client, "--site", "site-a", "--client-id", "site-a-0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"FEDFLEET_TERMINATION_LOG": str(termination)},
    )
    assert done.returncode == REFUSED_EXIT_CODE, done.stderr
    assert "Traceback" not in done.stderr
    assert f"fedfleet: spec.model.digest: the base model in {base}" in done.stderr and pinned in done.stderr
    assert termination.read_text().startswith("spec.model.digest:")


def test_the_digest_is_the_sha256_of_the_sha256sum_listing_of_the_weight_files(base: Path) -> None:
    """What the docs tell users to run to pin a model directory."""
    assert len(list(base.glob("*.safetensors"))) == 2
    listing = subprocess.run(
        ["sh", "-c", "sha256sum *.safetensors | sha256sum"],
        cwd=base,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert base_model_digest(base) == "sha256:" + listing.stdout.split()[0]


def hub_cache(root: Path, repo: str, model: Path) -> Path:
    """The layout huggingface_hub leaves after a download: refs/main names a snapshot."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    shutil.copytree(model, folder / "snapshots" / ("0" * 40))
    return root


def test_a_hub_id_is_read_from_the_local_cache_and_never_downloaded_by_default(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    task = load_task(*lora_task("tiny-org/tiny-llama", base_model_digest(base)))
    with pytest.raises(
        TaskError, match=re.escape("nothing is downloaded unless spec.task.config.allowDownload is true")
    ):
        task.build_model(0)

    monkeypatch.setattr(
        huggingface_hub.constants,
        "HF_HUB_CACHE",
        str(hub_cache(tmp_path / "hub", "tiny-org/tiny-llama", base)),
    )
    model = task.build_model(7)
    # what every client starts from is exactly the aggregator's initial adapter, read from config only
    spec = FederatedTraining.model_validate(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "hub"},
            "spec": {
                "task": {"name": "causal-lm-lora", "config": LORA},
                "model": {"source": "tiny-org/tiny-llama", "digest": base_model_digest(base), "seed": 7},
                "rounds": 1,
                "sites": {"names": ["a"]},
                "secureAggregation": {"enabled": False},
            },
        }
    ).spec
    aggregator = initial_weights(spec)
    client = task.federated_weights(model)
    assert aggregator.keys() == client.keys()
    for name in aggregator:
        np.testing.assert_array_equal(aggregator[name], client[name])
    assert any(np.abs(v).sum() > 0 for v in aggregator.values())
    reseeded = initial_weights(spec.model_copy(update={"model": spec.model.model_copy(update={"seed": 8})}))
    assert any(not np.array_equal(aggregator[name], reseeded[name]) for name in aggregator)


def test_a_task_without_a_base_model_still_wants_a_file_as_source(base: Path) -> None:
    spec = FederatedTraining.model_validate(
        {
            "apiVersion": "fedfleet.io/v1alpha1",
            "kind": "FederatedTraining",
            "metadata": {"name": "digits"},
            "spec": {
                "task": {"name": "digits-mlp"},
                "model": {"source": str(base)},
                "rounds": 1,
                "sites": {"names": ["a"]},
            },
        }
    ).spec
    with pytest.raises(ModelSourceError, match=r"spec.model.source: .* is not a file"):
        initial_weights(spec)


def site(name: str, data_dir: Path | None = None) -> SiteContext:
    return SiteContext(name, f"{name}-0", 0, 1, 0, data_dir)


def test_site_text_problems_name_the_file_and_line(base: Path, tmp_path: Path) -> None:
    digest = base_model_digest(base)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "chat.jsonl").write_text(
        '{"prompt": "hi", "response": "yo"}\n\n{"prompt": "no response"}\n'
    )
    task = load_task(*lora_task(base, digest, data=str(tmp_path / "{site}")))
    with pytest.raises(TaskError, match=r"chat.jsonl:3: expected \{\"prompt\""):
        task.load_data(site("a"))
    with pytest.raises(TaskError, match=r"no \*.jsonl or \*.txt files under .*empty"):
        (tmp_path / "empty").mkdir()
        task.load_data(site("empty"))
    with pytest.raises(
        TaskError, match=re.escape("set spec.task.config.data or give the site a data volume")
    ):
        load_task(*lora_task(base, digest)).load_data(site("a"))


def test_the_site_data_volume_is_read_when_no_path_is_configured(base: Path, tmp_path: Path) -> None:
    write_site_text(tmp_path, ["site-a"], count=20)
    task = load_task(*lora_task(base, base_model_digest(base)))
    data = task.load_data(site("site-a", tmp_path / "site-a"))
    assert (len(data.splits.train), len(data.splits.test)) == (18, 2)
    model = task.build_model(0)
    examples, metrics = task.evaluate(model, data, torch.device("cpu"))
    assert examples == 2 and metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]))


def test_a_released_adapter_carries_an_adapter_config_peft_loads(tmp_path: Path) -> None:
    from peft import LoraConfig

    spec = TaskSpec(
        name="causal-lm-lora", config={"rank": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]}
    )
    task = load_task(spec, ModelSpec(source="/models/tiny", digest="sha256:" + "0" * 64))
    for name, content in task.release_files().items():
        (tmp_path / name).write_bytes(content)
    config = LoraConfig.from_pretrained(str(tmp_path))
    assert config.r == 4 and config.lora_alpha == 8 and set(config.target_modules) == {"q_proj", "v_proj"}
    assert config.base_model_name_or_path == "/models/tiny"
