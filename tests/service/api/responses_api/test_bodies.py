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
from service.api.responses_api.bodies import EventWriter, echoed_settings, response_object
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
        "resp_1", 1, SETTINGS, "failed", error={"code": "server_error", "message": "x"}
    )
    assert Response.model_validate(failed).error is not None


def test_events_are_the_sdks_events_and_its_accumulator_takes_them():
    writer = EventWriter("msg_1")
    start = response_object("resp_1", 1, SETTINGS, "in_progress")
    raw = (
        writer.lifecycle("response.created", start)
        + writer.lifecycle("response.in_progress", start)
        + writer.opening()
        + writer.delta("He")
        + writer.delta('llo "x"\n')
        + writer.closing('Hello "x"\n', "completed")
        + writer.lifecycle(
            "response.completed",
            response_object(
                "resp_1",
                1,
                SETTINGS,
                "completed",
                item_id="msg_1",
                text='Hello "x"\n',
                usage=Usage(2, 2),
            ),
        )
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
    state = ResponseStreamState(input_tools=[], text_format=omit)
    deltas = []
    for payload in events:
        event = EVENT.validate_python(payload)
        for out in state.handle_event(event):
            if out.type == "response.output_text.delta":
                deltas.append(out.delta)
    assert "".join(deltas) == 'Hello "x"\n'
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == 'Hello "x"\n'


def test_an_error_event_is_the_sdks_error_event():
    writer = EventWriter("msg_1")
    event = parse_events(writer.error(errors.DeadlineExceeded("late")))[0]
    parsed = EVENT.validate_python(event)
    assert parsed.type == "error" and parsed.code == "deadline_exceeded"
