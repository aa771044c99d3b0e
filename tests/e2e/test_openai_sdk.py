"""`gmai-vl serve --model <tiny>` answers the official openai SDK: sync and async,
stream and non-stream, an image as a data URL. The model is real (transformers
engine on a freshly assembled tiny LLaVA), so answers are noise but real tokens."""

from __future__ import annotations

import httpx
import openai

from tests.conftest import image_message, png_data_url


def test_sync_non_stream_with_image(served_tiny):
    client = openai.OpenAI(base_url=served_tiny + "/v1", api_key="unused")
    r = client.chat.completions.create(
        model="tiny", messages=image_message(png_data_url()), max_tokens=8, temperature=0
    )
    assert r.model == "tiny" and r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens > 16  # 16 image tokens plus the text
    assert 1 <= r.usage.completion_tokens <= 8
    again = client.chat.completions.create(
        model="tiny", messages=image_message(png_data_url()), max_tokens=8, temperature=0
    )
    assert again.choices[0].message.content == r.choices[0].message.content


def test_sync_stream_matches_non_stream_under_a_seed(served_tiny):
    client = openai.OpenAI(base_url=served_tiny + "/v1", api_key="unused")
    kwargs = dict(
        model="tiny",
        messages=image_message(png_data_url()),
        max_tokens=12,
        seed=3,
        temperature=0.8,
        top_p=0.9,
    )
    whole = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


async def test_async_client_concurrent_streams(served_tiny):
    import asyncio

    client = openai.AsyncOpenAI(base_url=served_tiny + "/v1", api_key="unused")

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=image_message(png_data_url(color=(i * 40, 0, 0))),
            max_tokens=6,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    answers = await asyncio.gather(*(one(i) for i in range(4)))
    assert len(answers) == 4
    await client.close()


def test_models_and_metrics(served_tiny):
    client = openai.OpenAI(base_url=served_tiny + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]
    metrics = httpx.get(served_tiny + "/metrics").text
    assert (
        'gmaivl_requests_total{model="tiny",route="/v1/chat/completions",status_class="2xx"}'
        in metrics
    )
