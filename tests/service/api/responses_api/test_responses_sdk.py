"""`/v1/responses` over real HTTP with the official `openai` SDK, on the fake engine,
embedded (in-memory store) and with Redis (Redis queue and store, a real
redis-server): create with text, a PNG and a DICOM; the stream helper; incomplete;
two turns of previous_response_id; retrieve, delete, input_items; background with
poll and cancel; unsupported parameters; storage turned off; the Agents SDK.
The same against a real model: tests/e2e/test_responses_sdk.py."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from pydicom.data import get_testdata_file

from service.config import Settings
from service.embedded import build_embedded
from service.engines.fake import FakeEngine
from service.security.keys import KeyFile
from service.security.policy import TenantPolicy
from tests.conftest import ThreadedServer, png_data_url

MODEL = "fake"


def dicom_data_url() -> str:
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115
    return "data:application/dicom;base64," + base64.b64encode(data).decode()


def image_input(url: str, text: str = "Describe this image.", **extra) -> list[dict]:
    image = {"type": "input_image", "image_url": url, "detail": "auto", **extra}
    return [{"role": "user", "content": [{"type": "input_text", "text": text}, image]}]


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request, redis_server) -> Iterator[ThreadedServer]:
    redis_url = None
    if request.param == "redis":
        redis_url = redis_server.url  # ids are fresh per test: no flush needed
    settings = Settings(engine="fake", served_model_name=MODEL, redis_url=redis_url)
    service = build_embedded(settings, FakeEngine(token_interval=0.01))
    with ThreadedServer(service.app) as running:
        yield running


def client(server: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def test_text_answer_equals_chat_greedy_answer(server):
    sdk = client(server)
    r = sdk.responses.create(
        model=MODEL, input="Describe the image.", max_output_tokens=5, temperature=0
    )
    chat = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe the image."}],
        max_tokens=5,
        temperature=0,
    )
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.output_text == chat.choices[0].message.content
    assert r.output[0].id.startswith("msg_") and r.output[0].type == "message"
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == 5 and r.usage.total_tokens == r.usage.input_tokens + 5
    assert r.store is True and r.temperature == 0 and r.tools == []


def test_png_and_dicom_inputs(server):
    sdk = client(server)
    png = sdk.responses.create(model=MODEL, input=image_input(png_data_url()), max_output_tokens=3)
    assert png.status == "incomplete" and png.output_text == "The image shows"
    ct = sdk.responses.create(
        model=MODEL,
        input=image_input(dicom_data_url(), dicom={"window": "abdomen"}),
        max_output_tokens=3,
    )
    rendering = ct.model_extra["dicom"][0]
    assert rendering["frames"][0]["window"]["center"] == 40  # the abdomen preset, as on chat
    kept = sdk.responses.input_items.list(ct.id, order="asc").data[0].content
    assert kept[1].image_url.startswith("data:image/png;base64,")  # pixels, not the DICOM file
    assert kept[1].model_extra["dicom_rendering"] == rendering


def test_max_output_tokens_is_incomplete(server):
    r = client(server).responses.create(model=MODEL, input="hi", max_output_tokens=2)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"


def test_the_stream_helper_yields_the_events_in_order(server):
    sdk = client(server)
    with sdk.responses.stream(model=MODEL, input="hi", max_output_tokens=6) as stream:
        events = list(stream)
    final = events[-1].response  # the fake engine always ends at its token limit: incomplete
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    assert final.usage.output_tokens == 6
    stored = sdk.responses.retrieve(final.id)  # a stream is stored too
    assert stored.output_text == final.output_text


def test_previous_response_id_two_turns_deep(server):
    sdk = client(server)
    first = sdk.responses.create(
        model=MODEL, input=image_input(png_data_url()), max_output_tokens=3, instructions="Short."
    )
    second = sdk.responses.create(
        model=MODEL, input="And the left side?", previous_response_id=first.id, max_output_tokens=4
    )
    third = sdk.responses.create(
        model=MODEL, input="Anything else?", previous_response_id=second.id, max_output_tokens=2
    )
    # the fake engine counts a prompt token per word: each turn carries the ones before
    # (instructions are not carried, as OpenAI)
    assert second.usage.input_tokens == first.usage.input_tokens - 1 + 3 + 4
    assert third.usage.input_tokens == second.usage.input_tokens + 4 + 2
    assert third.previous_response_id == second.id
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model=MODEL, input="x", previous_response_id="resp_unknown")


def test_retrieve_input_items_and_delete(server):
    sdk = client(server)
    r = sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Answer in mm."},
            {"role": "user", "content": [{"type": "input_text", "text": "Size?"}]},
        ],
        metadata={"viewer": "ohif"},
        max_output_tokens=2,
    )
    got = sdk.responses.retrieve(r.id)
    assert got.output_text == r.output_text and got.metadata == {"viewer": "ohif"}
    items = sdk.responses.input_items.list(r.id)
    assert [i.role for i in items.data] == ["user", "developer"]  # newest first by default
    assert items.data[0].content[0].text == "Size?"
    page = sdk.responses.input_items.list(r.id, order="asc", limit=1)
    assert [i.role for i in page.data] == ["developer"] and page.has_more
    sdk.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.input_items.list(r.id)


def test_store_false_keeps_nothing(server):
    sdk = client(server)
    r = sdk.responses.create(model=MODEL, input="hi", store=False, max_output_tokens=2)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(r.id)


def poll(sdk: openai.OpenAI, response_id: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        r = sdk.responses.retrieve(response_id)
        if r.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_background_create_poll_complete_and_cancel(server):
    sdk = client(server)
    queued = sdk.responses.create(model=MODEL, input="hi", background=True, max_output_tokens=8)
    assert queued.status == "queued" and queued.background is True
    done = poll(sdk, queued.id)
    assert done.status == "incomplete" and done.usage.output_tokens == 8
    assert done.output_text.startswith("The image shows")
    slow = sdk.responses.create(model=MODEL, input="hi", background=True, max_output_tokens=2000)
    time.sleep(0.2)
    cancelled = sdk.responses.cancel(slow.id)
    assert cancelled.status == "cancelled"
    time.sleep(0.3)
    assert sdk.responses.retrieve(slow.id).status == "cancelled"  # the worker's end lost
    foreground = sdk.responses.create(model=MODEL, input="hi", max_output_tokens=1)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.cancel(foreground.id)
    assert "background" in caught.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"conversation": "conv_123"}, "conversation"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "text": {
                    "format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}
                }
            },
            "text.format",
        ),
        ({"max_output_tokens": 10**6}, "max_output_tokens"),
        ({"input": image_input("http://169.254.169.254/x.png")}, "input[0].content[1]"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_field(server, extra, param):
    kwargs = {"model": MODEL, "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).responses.create(**kwargs)
    assert caught.value.param == param, caught.value.body


def test_neutral_values_the_sdks_send_are_accepted(server):
    r = client(server).responses.create(
        model=MODEL,
        input="hi",
        tools=[],
        include=[],
        tool_choice="auto",
        parallel_tool_calls=True,
        truncation="disabled",
        max_output_tokens=2,
    )
    assert r.status == "incomplete"


def test_logprobs_with_include(server):
    r = client(server).responses.create(
        model=MODEL,
        input="hi",
        max_output_tokens=2,
        top_logprobs=2,
        include=["message.output_text.logprobs"],
    )
    logprobs = r.output[0].content[0].logprobs
    assert len(logprobs) == 2 and len(logprobs[0].top_logprobs) == 2


def test_metrics_carry_the_route(server):
    client(server).responses.create(model=MODEL, input="hi", max_output_tokens=1)
    text = httpx.get(server.base_url + "/metrics").text
    assert 'route="/v1/responses",status_class="2xx"' in text


def test_storage_turned_off_by_the_operator():
    settings = Settings(engine="fake", served_model_name=MODEL, store_responses=False)
    service = build_embedded(settings, FakeEngine())
    with ThreadedServer(service.app) as running:
        sdk = client(running)
        r = sdk.responses.create(model=MODEL, input="hi", max_output_tokens=1)
        assert r.store is False  # store defaults to true; the deployment says false
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(r.id)
        for field in ("previous_response_id", "background"):
            value = r.id if field == "previous_response_id" else True
            with pytest.raises(openai.BadRequestError) as caught:
                sdk.responses.create(model=MODEL, input="hi", **{field: value})
            assert caught.value.param == field
            assert caught.value.code == "response_storage_disabled"


@pytest.fixture(scope="module")
def finishing() -> Iterator[ThreadedServer]:
    """An engine whose answers end by themselves ("stop"): `completed` responses."""
    settings = Settings(engine="fake", served_model_name=MODEL)
    service = build_embedded(settings, FakeEngine(end_of_sentence=True))
    with ThreadedServer(service.app) as running:
        yield running


def test_a_completed_stream_through_the_sdk_helper(finishing):
    sdk = client(finishing)
    with sdk.responses.stream(model=MODEL, input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.incomplete_details is None
    assert "".join(deltas) == final.output_text == "The image shows no acute abnormality."


def test_a_background_response_completes(finishing):
    sdk = client(finishing)
    queued = sdk.responses.create(model=MODEL, input="hi", background=True)
    assert queued.status == "queued"
    done = poll(sdk, queued.id)
    assert done.status == "completed" and done.completed_at is not None
    assert done.output_text == "The image shows no acute abnormality."
    assert [i.role for i in sdk.responses.input_items.list(done.id).data] == ["user"]


def test_the_agents_sdk_runs_a_one_turn_agent(finishing):
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    sdk = openai.AsyncOpenAI(base_url=finishing.base_url + "/v1", api_key="unused", max_retries=0)
    agent = Agent(
        name="reader",
        instructions="You describe medical images.",
        model=OpenAIResponsesModel(model=MODEL, openai_client=sdk),
    )
    result = Runner.run_sync(agent, "Describe the image.", max_turns=1)
    assert result.final_output == "The image shows no acute abnormality."


def test_a_tenants_429_and_another_tenants_404(tmp_path):
    keys = KeyFile(tenants={"a": TenantPolicy(requests_per_minute=2), "b": TenantPolicy()})
    made = {tenant: keys.create(tenant) for tenant in ("a", "b")}
    keys.save(tmp_path / "keys.json")
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        api_keys_file=tmp_path / "keys.json",
        api_keys_reload_interval=0,
    )
    service = build_embedded(settings, FakeEngine())
    with ThreadedServer(service.app) as running:

        def as_tenant(tenant: str) -> openai.OpenAI:
            url = running.base_url + "/v1"
            return openai.OpenAI(base_url=url, api_key=made[tenant], max_retries=0)

        a, b = as_tenant("a"), as_tenant("b")
        r = a.responses.create(model=MODEL, input="hi", max_output_tokens=1)
        for call in (
            lambda: b.responses.retrieve(r.id),
            lambda: b.responses.input_items.list(r.id),
            lambda: b.responses.delete(r.id),
            lambda: b.responses.create(model=MODEL, input="x", previous_response_id=r.id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        a.responses.create(model=MODEL, input="hi", max_output_tokens=1, previous_response_id=r.id)
        with pytest.raises(openai.RateLimitError) as caught:
            a.responses.create(model=MODEL, input="hi", max_output_tokens=1)
        assert caught.value.code == "tenant_requests_per_minute"
        assert a.responses.retrieve(r.id).id == r.id  # reads are not generations


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_leaves_cancels_the_job(stream):
    import asyncio

    engine = FakeEngine(token_interval=0.01)
    service = build_embedded(Settings(engine="fake", served_model_name=MODEL), engine)
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 4000, "stream": stream}
    with ThreadedServer(service.app) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:

            async def call():
                async with http.stream("POST", "/v1/responses", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass

            task = asyncio.create_task(call())
            while not engine.running:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()  # drops the connection
            started = time.monotonic()
            while engine.running and time.monotonic() - started < 2:
                await asyncio.sleep(0.01)
            assert engine.running == set(), "engine still generating after the client left"
            assert len(engine.aborted) == 1 and engine.tokens_emitted < 1000


def test_audit_events_name_the_route_tenant_and_outcome(tmp_path):
    import json

    keys = KeyFile(tenants={"a": TenantPolicy(requests_per_minute=1)})
    key = keys.create("a")
    keys.save(tmp_path / "keys.json")
    audit = tmp_path / "audit.jsonl"
    settings = Settings(
        engine="fake",
        served_model_name=MODEL,
        api_keys_file=tmp_path / "keys.json",
        api_keys_reload_interval=0,
        audit_log=str(audit),
    )
    service = build_embedded(settings, FakeEngine())
    secret = "Patient John Doe, MRN 12345"
    with ThreadedServer(service.app) as running:
        sdk = openai.OpenAI(base_url=running.base_url + "/v1", api_key=key, max_retries=0)
        r = sdk.responses.create(
            model=MODEL, input=image_input(png_data_url(), secret), max_output_tokens=1
        )
        with pytest.raises(openai.RateLimitError):
            sdk.responses.create(model=MODEL, input=secret, max_output_tokens=1)
        sdk.responses.retrieve(r.id)
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    routes = [(e["route"], e["outcome"]) for e in events]
    assert routes == [
        ("/v1/responses", "ok"),
        ("/v1/responses", "tenant_requests_per_minute"),
        ("/v1/responses/{id}", "ok"),
    ]
    assert events[0]["tenant"] == "a" and events[0]["images"] == 1
    assert secret not in audit.read_text() and r.id not in audit.read_text()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": 7}, "input"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": "x", "temperature": float("nan")}, None),
        ({"model": MODEL, "input": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        (
            {"model": MODEL, "input": "x", "previous_response_id": "r" * 5000},
            "previous_response_id",
        ),
        ({"model": MODEL, "input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
        ({"model": MODEL, "input": "x", "include": ["all"]}, "include"),
        ({"model": MODEL, "input": "x", "background": True, "store": False}, "background"),
        ({"model": MODEL, "input": "x", "background": True, "stream": True}, "stream"),
        ({"model": "another", "input": "x"}, "model"),
    ],
)
def test_bad_bodies_are_4xx_naming_the_field(server, body, param):
    import json

    raw = json.dumps(body).replace("NaN", "NaN")  # json.dumps writes NaN as the literal
    r = httpx.post(
        server.base_url + "/v1/responses",
        content=raw,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    if param is not None:
        assert error["param"] == param, error


def test_reads_of_unknown_or_odd_ids_are_404_or_400(server):
    for path in ("/v1/responses/resp_x", "/v1/responses/%00", "/v1/responses/resp_x/input_items"):
        assert httpx.get(server.base_url + path).status_code == 404
    assert httpx.delete(server.base_url + "/v1/responses/resp_x").status_code == 404
    assert httpx.post(server.base_url + "/v1/responses/resp_x/cancel").status_code == 404
    r = httpx.get(server.base_url + "/v1/responses/resp_x/input_items?limit=1000")
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_lane_and_deadline_headers_as_on_chat(server):
    sdk = client(server)
    r = sdk.responses.create(
        model=MODEL,
        input="hi",
        max_output_tokens=1,
        extra_body={"priority": "stat"},
        extra_headers={"X-Request-Timeout": "30"},
    )
    assert r.status == "incomplete"
    for header, value in (("X-Request-Timeout", "9999"), ("X-Priority", "asap")):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.responses.create(
                model=MODEL, input="hi", max_output_tokens=1, extra_headers={header: value}
            )
        assert caught.value.param == header
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, input="hi", extra_body={"priority": "asap"})
    assert caught.value.param == "priority"
