import json

from service import errors
from service.api.responses import ChunkWriter


def parse(event: str) -> dict:
    assert event.startswith("data: ") and event.endswith("\n\n")
    return json.loads(event[len("data: ") :])


def test_content_chunk_equals_the_plain_rendering():
    for include_usage in (False, True):
        writer = ChunkWriter("1", 123, "gmai-vl", include_usage)
        for text in ("hello", 'quote " and \\ slash', "病灶\n", ""):
            expected = {
                **writer.base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": text},
                        "finish_reason": None,
                        "logprobs": None,
                    }
                ],
            }
            if include_usage:
                expected["usage"] = None
            assert parse(writer.content(text)) == expected
            assert writer.content(text) == writer._chunk(expected["choices"])


def test_role_finish_usage_and_error_chunks():
    writer = ChunkWriter("1", 123, "m", True)
    assert parse(writer.role())["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parse(writer.finish("stop"))["choices"][0]["finish_reason"] == "stop"
    usage = parse(writer.usage({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3
    error = parse(writer.error(errors.DeadlineExceeded("late")))
    assert error == {
        "error": {
            "message": "late",
            "type": "timeout_error",
            "param": None,
            "code": "deadline_exceeded",
        }
    }
