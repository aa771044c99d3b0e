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


def test_unsupported_openai_parameters_are_refused_by_name_and_no_ops_pass():
    from service import errors
    from service.api.parameters import check_parameters

    for fields in ({"frequency_penalty": 0.0, "metadata": {"a": 1}}, {"tools": []},
                   {"tool_choice": "none"}, {"modalities": ["text"]}, {"logit_bias": {}},
                   {"store": True, "parallel_tool_calls": False}, {"future_field": 1}):  # fmt: skip
        check_parameters(parse(**fields))
    refused = [("tools", [{"type": "function"}]), ("n", 2), ("audio", {}),
               ("tool_choice", {"type": "function"}), ("presence_penalty", 1)]  # fmt: skip
    for field, value in refused:
        with pytest.raises(errors.InvalidRequest) as info:
            check_parameters(parse(**{field: value}))
        assert (info.value.code, info.value.param) == ("unsupported_parameter", field)


@pytest.mark.parametrize(
    "fields",
    [
        {"stop": ["a", "b", "c", "d", "e"]},
        {"n": 0},
        {"top_logprobs": 21},
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
