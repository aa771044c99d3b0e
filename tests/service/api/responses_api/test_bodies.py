"""The Responses bodies (service/api/responses_api/bodies.py) against the `openai`
SDK's own types: every object and event validates as the SDK's pydantic model, and
the SDK's stream accumulator builds the final response from our events."""

from __future__ import annotations

import json

from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from service import errors
from service.api.responses_api.bodies import (
    EventWriter,
    echoed_settings,
    error_object,
    response_object,
)
from service.api.responses_api.protocol import ResponseCreateRequest
from service.core.generation import Logprob, TokenLogprobs, Usage

EVENT = TypeAdapter(ResponseStreamEvent)
REQUEST = ResponseCreateRequest.model_validate(
    {
        "model": "m",
        "input": "hi",
        "instructions": "Be brief.",
        "metadata": {"study": "x"},
        "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
    }
)
SETTINGS = echoed_settings(REQUEST, store=True)


def parse_events(raw: str) -> list[dict]:
    events = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == name[len("event: ") :]
        events.append(payload)
    return events


def test_a_completed_response_is_the_sdks_response():
    token = TokenLogprobs(Logprob.of("Hi", -0.5), (Logprob.of("Hi", -0.5), Logprob.of("Yo", -2.0)))
    body = response_object(
        "resp_1", 1700000000, SETTINGS, "completed",
        item_id="msg_1", text="Hi", usage=Usage(5, 1), logprobs=[token],
    )  # fmt: skip
    response = Response.model_validate(body)
    assert response.output_text == "Hi"
    assert response.usage is not None and response.usage.total_tokens == 6
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    assert response.output[0].content[0].logprobs[0].top_logprobs[1].token == "Yo"  # type: ignore[union-attr]
    json.dumps(body, allow_nan=False)


def test_an_incomplete_and_a_failed_response():
    incomplete = Response.model_validate(
        response_object(
            "resp_1", 1, SETTINGS, "incomplete", item_id="m", text="a", usage=Usage(1, 1)
        )
    )
    assert incomplete.incomplete_details is not None
    assert incomplete.incomplete_details.reason == "max_output_tokens"
    assert incomplete.output[0].status == "incomplete"  # type: ignore[union-attr]
    failed = response_object(
        "resp_1", 1, SETTINGS, "failed", error=error_object(errors.DeadlineExceeded("late"))
    )
    assert Response.model_validate(failed).error is not None


def test_events_are_the_sdks_events_and_its_accumulator_takes_them():
    dicom = [{"frame_count": 1, "frames": [{"number": 1}]}]
    writer = EventWriter("resp_1", "msg_1", 1, SETTINGS, dicom)
    token = TokenLogprobs(Logprob.of("He", -0.5), (Logprob.of("He", -0.5),))
    start = writer.response("in_progress")
    text = 'Hello "x"\n'
    raw = (
        writer.lifecycle("response.created", start)
        + writer.lifecycle("response.in_progress", start)
        + writer.opening()
        + writer.delta("He", [token])
        + writer.delta('llo "x"\n')
    )
    closing, output = writer.closing(text, "completed", [token])
    raw += closing + writer.lifecycle(
        "response.completed", writer.response("completed", output, Usage(2, 2))
    )
    events = parse_events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    # the text rendering is response_object's JSON, key order aside
    expected = response_object(
        "resp_1", 1, SETTINGS, "completed",
        item_id="msg_1", text=text, usage=Usage(2, 2), logprobs=[token], dicom=dicom,
    )  # fmt: skip
    assert events[-1]["response"] == json.loads(json.dumps(expected))
    assert events[0]["response"] == json.loads(
        json.dumps(response_object("resp_1", 1, SETTINGS, "in_progress", dicom=dicom))
    )
    state = ResponseStreamState(input_tools=[], text_format=omit)
    deltas = []
    for payload in events:
        event = EVENT.validate_python(payload)
        for out in state.handle_event(event):
            if out.type == "response.output_text.delta":
                deltas.append(out.delta)
    assert "".join(deltas) == text
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text


def test_a_failed_stream_ends_with_the_sdks_failed_event():
    writer = EventWriter("resp_1", "msg_1", 1, SETTINGS)
    error = error_object(errors.EngineError("retry", code="worker_lost"))
    failed = writer.response("failed", error=error)
    event = parse_events(writer.lifecycle("response.failed", failed))[0]
    parsed = EVENT.validate_python(event)
    assert parsed.type == "response.failed" and parsed.response.error.message == "retry"
    assert parsed.response.error.code == "server_error"
    assert parsed.response.error.model_extra["gmaivl_code"] == "worker_lost"
    late = error_object(errors.Overloaded("busy", retry_after=1))
    assert late["code"] == "rate_limit_exceeded"


def test_an_error_event_is_the_sdks_error_event():
    writer = EventWriter("resp_1", "msg_1", 1, SETTINGS)
    event = parse_events(writer.error(errors.DeadlineExceeded("late")))[0]
    parsed = EVENT.validate_python(event)
    assert parsed.type == "error" and parsed.code == "deadline_exceeded"
