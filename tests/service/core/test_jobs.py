"""A failure crosses the queue as its code and comes back as the same error."""

from __future__ import annotations

import pytest

from service import errors
from service.core.jobs import JobFailed
from service.redis.codec import decode_events, encode_events

FAILURES = [
    errors.InvalidRequest("too long", param="max_tokens", code="context_length_exceeded"),
    errors.InvalidRequest("bad", code="unsupported_response_format"),
    errors.InvalidRequest("no code"),
    errors.NotReady("loading"),
    errors.DeadlineExceeded("late"),
    errors.EngineError("failed"),
    errors.Overloaded("busy upstream", retry_after=7),
    errors.UnprocessableImage("broken"),
]


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: errors.code_of(e))
def test_round_trip_keeps_status_code_param_and_retry_after(error):
    failure = JobFailed.from_exception(error)
    [(_, crossed)] = decode_events(encode_events([("job", failure)]))  # as over Redis
    back = crossed.to_exception()
    assert type(back).status_code == type(error).status_code
    assert back.code == errors.code_of(error) and back.param == error.param
    assert back.message == error.message
    if isinstance(error, errors.Overloaded):
        assert back.retry_after == 7


def test_worker_codes_map_to_their_family():
    assert isinstance(JobFailed("worker_lost", "m").to_exception(), errors.NotReady)
    assert isinstance(JobFailed("dead_letter", "m").to_exception(), errors.EngineError)
    unknown = JobFailed("something_new", "m").to_exception()
    assert isinstance(unknown, errors.EngineError) and unknown.code == "something_new"
