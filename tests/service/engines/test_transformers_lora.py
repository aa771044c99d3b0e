"""LoRA adapters on the transformers engine, served by the embedded app: each
adapter is its own model id over the one base, listed with its base as parent;
greedy answers of an adapter differ from the base's and do not leak into
concurrent base requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.config import Settings
from service.embedded import build_embedded
from tests.conftest import ThreadedServer

QUESTION = [{"role": "user", "content": "What does the image show?"}]


def make_adapter(base, out, seed: int) -> None:
    """A PEFT LoRA adapter over the LM with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration.from_pretrained(base)
    config = LoraConfig(
        r=8,
        lora_alpha=64,
        target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)",
        init_lora_weights=False,  # random B: the adapter changes the answers
    )
    get_peft_model(model, config).save_pretrained(out)


@pytest.fixture(scope="module")
def adapters(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    made = {}
    for name, seed in (("tiny-lora-a", 1), ("tiny-lora-b", 2)):
        make_adapter(tiny_checkpoint, root / name, seed)
        made[name] = root / name
    return made


async def test_adapters_served_beside_their_base(tiny_checkpoint, adapters):
    settings = Settings(
        model=tiny_checkpoint,
        served_model_name="tiny",
        engine="transformers",
        max_concurrency=3,
        lora=[f"{name}={path}" for name, path in adapters.items()],
    )
    with ThreadedServer(build_embedded(settings).app) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            listed = {
                m["id"]: m.get("parent") for m in (await http.get("/v1/models")).json()["data"]
            }
            assert listed == {"tiny": None, "tiny-lora-a": "tiny", "tiny-lora-b": "tiny"}

            async def ask(model: str) -> str:
                r = await http.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": QUESTION, "max_tokens": 12, "temperature": 0},
                )
                assert r.status_code == 200, r.text
                assert r.json()["model"] == model
                return r.json()["choices"][0]["message"]["content"]

            alone = {m: await ask(m) for m in listed}
            assert len(set(alone.values())) == 3, alone  # each adapter changes the answer
            # side by side: each request keeps its own adapter
            mixed = await asyncio.gather(*(ask(m) for m in list(listed) * 2))
            assert mixed == [alone[m] for m in list(listed) * 2]
            unknown = await http.post(
                "/v1/chat/completions", json={"model": "tiny-lora-c", "messages": QUESTION}
            )
            assert unknown.status_code == 404


def test_lora_flag_needs_name_and_directory():
    with pytest.raises(ValueError):
        Settings(lora=["no-directory"])
    with pytest.raises(ValueError):
        Settings(lora=["a=/x", "a=/y"])
    assert Settings(lora=["a=/x"]).lora_adapters() == {"a": __import__("pathlib").Path("/x")}
