"""A LoRA adapter from a short LoRA stage-III run, served beside its base by the
transformers engine (`--lora`): its greedy answers equal those of the merged
export served as a plain model, and differ from the base's."""

from __future__ import annotations

import httpx

from service.config import Settings
from service.embedded import build_embedded
from tests.conftest import ThreadedServer, image_message, png_data_url, serve_cli
from training.train.config import LoraSettings, StageConfig, TrainConfig
from training.train.stages import run_stages

PROMPTS = [
    image_message(png_data_url(color=(200, 20, 20)), "What modality is this?"),
    [{"role": "user", "content": "Describe the finding."}],
]


def answers(settings: Settings, models: list[str]) -> dict[str, list[str]]:
    with ThreadedServer(build_embedded(settings).app) as server:
        out: dict[str, list[str]] = {}
        for model in models:
            out[model] = []
            for messages in PROMPTS:
                r = httpx.post(
                    server.base_url + "/v1/chat/completions",
                    json={"model": model, "messages": messages, "max_tokens": 10, "temperature": 0},
                    timeout=60,
                )
                assert r.status_code == 200, r.text
                out[model].append(r.json()["choices"][0]["message"]["content"])
        return out


def test_adapter_from_lora_stage_served_beside_its_base(tiny_checkpoint, demo_corpus, tmp_path):
    stage = StageConfig(
        "III", ("projector", "llm"), 5e-3, max_steps=12, batch_size=4, warmup=0,
        lora=LoraSettings(r=8, alpha=16),
    )  # fmt: skip
    config = TrainConfig(
        model=str(tiny_checkpoint),
        data=str(demo_corpus / "example_list.json"),
        stages={3: stage},
        max_length=128,
        progress=False,
    )
    merged = run_stages(config, [3], tmp_path / "run")
    adapter = tmp_path / "run" / "stage3" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()

    served = answers(
        Settings(
            model=tiny_checkpoint,
            served_model_name="base",
            engine="transformers",
            lora=[f"ft={adapter}"],
        ),
        ["base", "ft"],
    )
    plain = answers(
        Settings(model=merged, served_model_name="merged", engine="transformers"), ["merged"]
    )
    assert served["ft"] == plain["merged"]
    assert served["ft"] != served["base"]


def test_lm_only_adapter_same_answers_on_vllm_and_transformers(
    tiny_checkpoint, demo_corpus, tmp_path
):
    """An adapter of the LM alone (the stage trains `llm` only, so no projector rides
    along): vLLM's LoRA serves it beside the base with the transformers engine's
    greedy answers."""
    stage = StageConfig(
        "III", ("llm",), 5e-3, max_steps=12, batch_size=4, warmup=0,
        lora=LoraSettings(r=8, alpha=16),
    )  # fmt: skip
    config = TrainConfig(
        model=str(tiny_checkpoint),
        data=str(demo_corpus / "example_list.json"),
        stages={3: stage},
        max_length=128,
        progress=False,
    )
    run_stages(config, [3], tmp_path / "run")
    adapter = tmp_path / "run" / "stage3" / "adapter"
    reference = answers(
        Settings(
            model=tiny_checkpoint,
            served_model_name="base",
            engine="transformers",
            lora=[f"ft={adapter}"],
        ),
        ["base", "ft"],
    )
    assert reference["ft"] != reference["base"]
    flags = [
        "--engine", "vllm", "--model", str(tiny_checkpoint), "--served-model-name", "base",
        "--lora", f"ft={adapter}", "--dtype", "float32",
        "--kv-cache-memory-bytes", str(256 << 20), "--enforce-eager",
    ]  # fmt: skip
    with serve_cli(flags, log_path=tmp_path / "vllm.log") as base_url:
        listed = {
            m["id"]: m.get("parent") for m in httpx.get(base_url + "/v1/models").json()["data"]
        }
        assert listed == {"base": None, "ft": "base"}
        served = {model: [] for model in ("base", "ft")}
        for model in served:
            for messages in PROMPTS:
                r = httpx.post(
                    base_url + "/v1/chat/completions",
                    json={"model": model, "messages": messages, "max_tokens": 10, "temperature": 0},
                    timeout=120,
                )
                assert r.status_code == 200, r.text
                served[model].append(r.json()["choices"][0]["message"]["content"])
    assert served == reference
