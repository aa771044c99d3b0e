"""Responses requests: what is refused by name, what neutral values pass, how input
becomes chat messages, and what a stored response keeps of its input."""

from __future__ import annotations

import pytest

from service import errors
from service.api.responses_api.input import KeptImage, kept_items, rename_param, to_chat_input
from service.api.responses_api.parameters import check_parameters
from service.api.responses_api.protocol import ResponseCreateRequest

PNG = "data:image/png;base64,AAAA"


def request(**fields) -> ResponseCreateRequest:
    return ResponseCreateRequest.model_validate({"model": "m", "input": "hi", **fields})


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"reasoning": {"summary": "auto"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": "a"}, {"type": "function_call_output"}]},
            "input[1]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(fields, param):
    with pytest.raises(errors.InvalidRequest) as caught:
        check_parameters(request(**fields))
    assert caught.value.param == param
    assert caught.value.code == "unsupported_parameter"


def test_neutral_values_sdks_send_pass():
    check_parameters(
        request(
            tools=[],
            include=[],
            tool_choice="auto",
            parallel_tool_calls=False,
            truncation="disabled",
            reasoning={"effort": None, "summary": None},
            text={"format": {"type": "text"}, "verbosity": "medium"},
            store=False,
            service_tier="auto",
            stream_options={"include_obfuscation": False},
            prompt_cache_key="k",
            safety_identifier="s",
        )
    )


def test_an_unknown_include_is_a_400():
    with pytest.raises(errors.InvalidRequest) as caught:
        check_parameters(request(include=["everything"]))
    assert caught.value.param == "include"


def test_input_becomes_chat_messages_with_their_sources():
    body = request(
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Use mm."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is seen?"},
                    {"type": "input_image", "image_url": PNG, "dicom": {"window": "lung"}},
                ],
            },
        ],
    )
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Yo"}],
        },
    ]
    chat = to_chat_input(body.instructions, history, body.input_items())
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "developer", "user"]
    assert chat.sources == [
        "instructions",
        "previous_response_id",
        "previous_response_id",
        "input[0]",
        "input[1]",
    ]
    image = chat.messages[4].content[1]  # type: ignore[index]
    assert image.type == "image_url" and image.image_url.url == PNG
    assert image.image_url.dicom.window == "lung"
    exc = rename_param(errors.InvalidRequest("bad", param="messages[4].content[1]"), chat.sources)
    assert exc.param == "input[1].content[1]"
    exc = rename_param(errors.InvalidRequest("bad", param="messages[1].content[0]"), chat.sources)
    assert exc.param == "previous_response_id"
    exc = rename_param(errors.InvalidRequest("max_tokens is 9", param="max_tokens"), chat.sources)
    assert exc.param == "max_output_tokens" and "max_output_tokens" in exc.message


def test_kept_input_holds_urls_and_rendered_pixels_never_the_upload():
    url = "https://pacs.example/dicom-web/studies/1/series/2/instances/3"
    body = request(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Compare."},
                    {"type": "input_image", "image_url": url, "dicom": {"frames": [1]}},
                    {"type": "input_image", "image_url": "data:application/dicom;base64,RElDTQ=="},
                ],
            }
        ]
    )
    rendering = {"frame_count": 2, "frames": [{"frame": 1}, {"frame": 2}]}
    kept = kept_items(
        body.input_items(),
        [
            KeptImage([url], None),
            KeptImage(["data:image/png;base64,A", "data:image/png;base64,B"], rendering),
        ],
    )
    content = kept[0]["content"]
    assert kept[0]["id"].startswith("msg_") and kept[0]["role"] == "user"
    assert content[0] == {"type": "input_text", "text": "Compare."}
    assert content[1]["image_url"] == url and content[1]["dicom"] == {"frames": [1]}
    assert [c["image_url"] for c in content[2:]] == [
        "data:image/png;base64,A",
        "data:image/png;base64,B",
    ]
    assert content[2]["dicom_rendering"] == rendering
    assert "application/dicom" not in str(kept)
