"""The transformers engine on a real tiny LLaVA checkpoint."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from service import errors
from service.core.generation import Delta, Finish, GenerationRequest, ImageInput, SamplingParams
from service.engines.transformers_engine import TransformersEngine


@pytest.fixture
async def engine(tiny_checkpoint):
    engine = TransformersEngine(tiny_checkpoint, max_concurrency=2)
    await engine.start()
    yield engine
    await engine.stop()


def request(rid="r", max_tokens=8, images=1, **sampling) -> GenerationRequest:
    image = Image.new("RGB", (40, 30), (200, 20, 20))
    content = [{"type": "image"}] * images + [{"type": "text", "text": "Describe this image."}]
    return GenerationRequest(
        rid,
        [{"role": "user", "content": content}],
        SamplingParams(max_tokens=max_tokens, **sampling),
        [ImageInput(40, 30, image.tobytes())] * images,
    )


async def run(engine, req):
    return [event async for event in engine.generate(req)]


async def test_streams_deltas_then_finish_with_usage(engine):
    events = await run(engine, request(max_tokens=6, temperature=0))
    *deltas, finish = events
    assert all(isinstance(d, Delta) for d in deltas)
    assert isinstance(finish, Finish)
    # prompt: chat template + 16 image tokens (56 px / 14 px patches, CLS dropped)
    assert finish.usage.prompt_tokens > 16
    assert finish.usage.completion_tokens <= 6
    assert finish.finish_reason in ("stop", "length")


async def test_greedy_is_deterministic_and_seed_reproduces_sampling(engine):
    greedy = [await run(engine, request(str(i), temperature=0)) for i in range(2)]
    assert greedy[0] == greedy[1]
    a, b = await asyncio.gather(
        run(engine, request("a", seed=7)), run(engine, request("b", seed=7))
    )
    assert a == b  # concurrent requests, same seed, same answer
    others = [await run(engine, request(f"s{s}", seed=s, max_tokens=16)) for s in (1, 2, 3)]
    assert len({str(o) for o in others}) > 1


async def test_max_tokens_bounds_generation(engine):
    finish = (await run(engine, request(max_tokens=3, temperature=0)))[-1]
    assert finish.usage.completion_tokens <= 3


async def test_text_only_prompt_works(engine):
    finish = (await run(engine, request(images=0, max_tokens=2)))[-1]
    assert isinstance(finish, Finish)


async def test_prompt_longer_than_context_is_invalid_request(engine):
    with pytest.raises(errors.InvalidRequest) as info:
        await run(engine, request(max_tokens=4000))
    assert info.value.code == "context_length_exceeded"


async def test_abort_stops_generation_and_frees_the_slot(engine):
    gen = engine.generate(request("long", max_tokens=1500, temperature=1.0, seed=0))
    await anext(gen)
    assert "long" in engine._aborts
    await engine.abort("long")
    rest = [event async for event in gen]
    assert len(rest) < 50  # stopped within a few tokens, far from 1500
    assert not any(isinstance(event, Finish) for event in rest)
    assert "long" not in engine._aborts


async def test_load_failure_is_not_ready(tmp_path):
    engine = TransformersEngine(tmp_path / "missing")
    with pytest.raises(errors.NotReady):
        await engine.start()


async def test_logprobs_one_per_answer_token_with_the_best_alternatives(engine):
    events = await run(engine, request(max_tokens=8, temperature=0, logprobs=3))
    *deltas, finish = events
    tokens = [t for d in deltas for t in d.logprobs]
    eos = 1 if finish.finish_reason == "stop" else 0  # the end token has no text, no entry
    assert len(tokens) == finish.usage.completion_tokens - eos
    for token in tokens:
        assert len(token.top) == 3
        values = [t.logprob for t in token.top]
        assert values == sorted(values, reverse=True)
        # greedy: the chosen token is the most likely one, with its probability
        assert token.chosen.token == token.top[0].token
        assert token.chosen.logprob == pytest.approx(token.top[0].logprob)
        assert -9999.0 <= token.chosen.logprob <= 0.0
    # Token texts may split a character (U+FFFD each); their bytes rebuild the answer.
    answer = bytes(b for t in tokens for b in t.chosen.bytes).decode("utf-8", errors="replace")
    assert answer.rstrip("\ufffd") == "".join(d.text for d in deltas)


async def test_without_logprobs_deltas_carry_none(engine):
    *deltas, _ = await run(engine, request(max_tokens=4, temperature=0))
    assert all(d.logprobs == () for d in deltas)


async def test_logprobs_zero_gives_the_chosen_token_only(engine):
    *deltas, _ = await run(engine, request(max_tokens=4, temperature=1.0, seed=3, logprobs=0))
    tokens = [t for d in deltas for t in d.logprobs]
    assert tokens and all(t.top == () for t in tokens)


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-6])
async def test_a_vanishing_temperature_is_greedy_not_an_engine_error(engine, temperature):
    """logits / 1e-300 overflow to inf and softmax to NaN: greedy below 1e-5, as vLLM."""
    greedy = await run(engine, request("g", temperature=0))
    assert await run(engine, request("t", temperature=temperature)) == greedy


async def test_a_bf16_checkpoint_is_served_in_bf16(tiny_checkpoint, tmp_path):
    """The checkpoint's own dtype (what `model import --dtype bfloat16` writes) is the
    served dtype, and the processor's float32 pixels are cast to it."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    bf16 = tmp_path / "bf16"
    model = LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    model.save_pretrained(bf16)
    AutoProcessor.from_pretrained(tiny_checkpoint).save_pretrained(bf16)
    engine = TransformersEngine(bf16, max_concurrency=1)
    await engine.start()
    try:
        assert engine.model.dtype == torch.bfloat16
        inputs = engine._encode(request())
        assert inputs["pixel_values"].dtype == torch.bfloat16
        assert inputs["input_ids"].dtype == torch.long
        *_, finish = await run(engine, request(max_tokens=4, temperature=0))
        assert isinstance(finish, Finish) and finish.usage.completion_tokens >= 1
    finally:
        await engine.stop()
