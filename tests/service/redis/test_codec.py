"""Jobs and events through the Redis codec: what crosses Redis reads back the same."""

from __future__ import annotations

from service.core.generation import (
    Delta,
    Finish,
    GenerationRequest,
    Logprob,
    SamplingParams,
    TokenLogprobs,
    Usage,
)
from service.core.jobs import Job
from service.core.lanes import Lane
from service.redis.codec import decode_events, decode_job, encode_events, encode_job


def test_logprobs_cross_redis_exactly_with_their_bytes():
    split = TokenLogprobs(
        Logprob.of("\ufffd", -0.5, b"\xe7"),  # half a character: its bytes are what count
        (Logprob.of("\ufffd", -0.5, b"\xe7"), Logprob.of(" a", float("-inf"))),
    )
    events = [
        ("j1", Delta("", (split,))),
        ("j1", Delta("病", (TokenLogprobs(Logprob.of("\ufffd", -1.25, b"\x97\x85")),))),
        ("j1", Delta("plain")),
        ("j1", Finish("stop", Usage(3, 3))),
    ]
    decoded = decode_events(encode_events(events))
    assert decoded == events
    assert decoded[0][1].logprobs[0].top[1].logprob == -9999.0  # -inf is not JSON


def test_a_job_keeps_its_logprobs_request_and_reads_jobs_without_it():
    sampling = SamplingParams(max_tokens=4, logprobs=5)
    job = Job("j", "m", Lane.routine, GenerationRequest("j", [], sampling), 1.0)
    assert decode_job(encode_job(job, []), []).request.sampling.logprobs == 5
    older = encode_job(job, []).replace(',"logprobs":5', "")  # a gateway before logprobs
    assert decode_job(older, []).request.sampling.logprobs is None
