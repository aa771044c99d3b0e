"""`/v1/responses` against a real model (transformers engine on the tiny LLaVA) with
the official `openai` SDK: the answer is chat's greedy answer for the same prompt,
text, a PNG and a DICOM; the stream helper matches; a conversation continues with
its image. In Redis mode a background response survives the gateway that took it."""

from __future__ import annotations

import base64
import time

import httpx
import openai
from pydicom.data import get_testdata_file

from service.processes import MODEL, Cluster
from tests.conftest import image_message, png_data_url


def dicom_data_url() -> str:
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115
    return "data:application/dicom;base64," + base64.b64encode(data).decode()


def as_input(url: str, text: str = "Describe this image.", **extra) -> list[dict]:
    """`image_message` in the Responses shape (same order, same words)."""
    image = {"type": "input_image", "image_url": url, "detail": "auto", **extra}
    return [{"role": "user", "content": [image, {"type": "input_text", "text": text}]}]


def test_output_text_is_chats_greedy_answer(served_tiny):
    sdk = openai.OpenAI(base_url=served_tiny + "/v1", api_key="unused", max_retries=0)
    text = sdk.responses.create(model="tiny", input="hello", max_output_tokens=8, temperature=0)
    chat = sdk.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert text.output_text == chat.choices[0].message.content
    assert text.usage.input_tokens == chat.usage.prompt_tokens
    for url, extra, dicom in (
        (png_data_url(), {}, None),
        (dicom_data_url(), {"window": "lung"}, {"window": "lung"}),
    ):
        r = sdk.responses.create(
            model="tiny",
            input=as_input(url, **({"dicom": extra} if extra else {})),
            max_output_tokens=8,
            temperature=0,
        )
        part = image_message(url)
        if dicom:
            part[0]["content"][0]["image_url"]["dicom"] = dicom
        chat = sdk.chat.completions.create(model="tiny", messages=part, max_tokens=8, temperature=0)
        assert r.output_text == chat.choices[0].message.content
        if dicom:  # the window reported as on chat
            assert r.model_extra["dicom"] == chat.model_extra["dicom"]
            assert r.model_extra["dicom"][0]["frames"][0]["window"]["center"] == -600


def test_stream_helper_and_a_continued_conversation(served_tiny):
    sdk = openai.OpenAI(base_url=served_tiny + "/v1", api_key="unused", max_retries=0)
    kwargs = dict(model="tiny", input=as_input(png_data_url()), max_output_tokens=10, temperature=0)
    whole = sdk.responses.create(**kwargs)
    with sdk.responses.stream(**kwargs) as stream:
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response  # completed or incomplete: the tiny model rarely stops
    assert "".join(deltas) == final.output_text == whole.output_text
    follow = sdk.responses.create(
        model="tiny",
        input="And the colour?",
        previous_response_id=whole.id,
        max_output_tokens=6,
        temperature=0,
    )
    # the image came along: the new prompt holds the first prompt, its answer and more
    assert follow.usage.input_tokens > whole.usage.input_tokens + whole.usage.output_tokens
    assert follow.status in ("completed", "incomplete")


def test_background_response_survives_the_gateway_that_took_it(tmp_path):
    cluster = Cluster(tmp_path, GMAIVL_RESPONSE_LEASE="1", GMAIVL_FAKE_TOKEN_INTERVAL="0.02")
    try:
        cluster.add_worker()
        first, second = cluster.add_gateway(), cluster.add_gateway()
        body = {"model": MODEL, "input": "hi", "background": True, "max_output_tokens": 150}
        queued = httpx.post(first + "/v1/responses", json=body, timeout=30).json()
        assert queued["status"] == "queued"
        time.sleep(0.3)
        cluster.gateways[0][0].kill()  # gone without a word, mid-answer
        cluster.gateways[0][0].wait()
        sdk = openai.OpenAI(base_url=second + "/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            r = sdk.responses.retrieve(queued["id"])
            if r.status not in ("queued", "in_progress") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status == "incomplete", r
        assert r.usage.output_tokens == 150 and r.output_text.startswith("The image shows")
    finally:
        cluster.close()
