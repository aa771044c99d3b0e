import pytest
from pydantic import ValidationError

from service.api.protocol import ChatCompletionRequest


def parse(**fields):
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_openai_field_names_and_defaults():
    request = parse(max_completion_tokens=7, max_tokens=3, stop="END", seed=1)
    assert request.requested_max_tokens() == 7  # the newer field wins
    assert request.stop_sequences() == ("END",)
    assert parse().requested_max_tokens() is None and parse().stop_sequences() == ()


def test_unknown_fields_are_ignored_like_openai_sdk_extras():
    assert parse(frequency_penalty=0.0, metadata={"a": 1}).model == "m"


@pytest.mark.parametrize(
    "fields",
    [
        {"stop": ["a", "b", "c", "d", "e"]},
        {"n": 2},
        {"top_p": 0},
        {"max_tokens": 0},
        {"priority": "vip"},
        {"messages": []},
        {"seed": 2**64},
    ],
)
def test_out_of_contract_values_are_refused(fields):
    with pytest.raises(ValidationError):
        parse(**fields)


def test_content_parts_are_discriminated_by_type():
    request = parse(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"},
                    },
                ],
            }
        ]
    )
    parts = request.messages[0].content
    assert [p.type for p in parts] == ["text", "image_url"]
