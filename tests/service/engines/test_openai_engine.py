"""The openai engine's translation of upstream logprobs (its relaying runs end to end
against vLLM's own server in tests/e2e/test_vllm_serving.py)."""

from __future__ import annotations

from service.core.generation import GenerationRequest, SamplingParams
from service.engines.openai_engine import _logprobs, upstream_body


def test_upstream_logprobs_become_ours_with_their_bytes():
    raw = {"content": [
        {"token": "\ufffd", "logprob": -0.5, "bytes": [231],
         "top_logprobs": [{"token": "\ufffd", "logprob": -0.5, "bytes": [231]},
                          {"token": " a", "logprob": -2.0, "bytes": [32, 97]}]},
    ]}  # fmt: skip
    (token,) = _logprobs(raw)
    chosen = token.chosen
    assert (chosen.token, chosen.logprob, chosen.bytes) == ("\ufffd", -0.5, (231,))
    assert [(t.token, t.logprob) for t in token.top] == [("\ufffd", -0.5), (" a", -2.0)]


def test_odd_upstream_logprobs_are_the_floor_not_a_failed_answer():
    raw = {"content": [{"token": "x", "logprob": None, "bytes": [999], "top_logprobs": "no"},
                       "junk"]}  # fmt: skip
    (token,) = _logprobs(raw)
    assert token.chosen.logprob == -9999.0 and token.chosen.bytes == (120,) and token.top == ()
    assert _logprobs(None) == () and _logprobs({"content": None}) == ()


def test_logprobs_are_asked_upstream_only_when_asked_here():
    request = GenerationRequest("r", [], SamplingParams(max_tokens=2, logprobs=3))
    assert upstream_body(request, "m")["top_logprobs"] == 3
    plain = GenerationRequest("r", [], SamplingParams(max_tokens=2))
    assert "logprobs" not in upstream_body(plain, "m")
