"""The one job path (chat, reads, Responses): submit counts a full lane's refusal; collect
reads events to the end (a restart starts the text over, a failure is raised)."""

from __future__ import annotations

import time

import pytest

from service import errors
from service.core.generation import Delta, Finish, GenerationRequest, SamplingParams, Usage
from service.core.jobs import Job, JobFailed, Restarted
from service.core.lanes import Lane
from service.metrics import ServiceMetrics
from service.queue.memory import InProcessJobQueue
from service.serving.jobs import JobPath, collect


def job(job_id: str) -> Job:
    messages = [{"role": "user", "content": "hi"}]
    request = GenerationRequest(job_id, messages, SamplingParams(max_tokens=4))
    return Job(job_id, "m", Lane("routine"), request, deadline=time.time() + 30)


def rejected(metrics: ServiceMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("gmaivl_rejections_total", {"reason": reason})
    return value or 0.0


async def test_a_full_lane_is_refused_and_counted():
    metrics = ServiceMetrics()
    path = JobPath(InProcessJobQueue(max_depth=1), metrics)
    events = await path.submit(job("a"))
    with pytest.raises(errors.Overloaded):
        await path.submit(job("b"))
    assert rejected(metrics, "queue_full") == 1
    await events.aclose()


async def test_collect_reads_to_the_finish_and_starts_over_on_restart():
    queue = InProcessJobQueue()
    path = JobPath(queue, ServiceMetrics())
    events = await path.submit(job("a"))
    taken = await queue.take(timeout=1)
    assert taken is not None and taken.id == "a"
    for event in (Delta("lost"), Restarted(2), Delta("he"), Delta("llo")):
        await queue.publish("a", event)
    await queue.publish("a", Finish("stop", Usage(1, 2)))
    starts: list[int] = []
    done = await collect(events, lambda: starts.append(1))
    assert (done.text, done.finish.usage.completion_tokens, starts) == ("hello", 2, [1])


async def test_collect_raises_a_failure_as_its_error():
    queue = InProcessJobQueue()
    events = await JobPath(queue, ServiceMetrics()).submit(job("a"))
    await queue.take(timeout=1)
    await queue.publish("a", JobFailed("deadline_exceeded", "late"))
    with pytest.raises(errors.DeadlineExceeded):
        await collect(events)


async def _events(*batches):
    for batch in batches:
        yield list(batch)


async def _relay(first, *rest):
    from service.serving.jobs import relayed

    return [batch async for batch in relayed(list(first), _events(*rest))]


async def test_a_stream_relays_a_restart_before_text_and_fails_one_after():
    from service.serving.jobs import ENDED, WORKER_LOST

    done = Finish("stop", Usage(1, 1))
    before = await _relay([Restarted(1)], [Delta("a"), done])
    assert before == [[], [Delta("a"), done]]  # the new attempt simply continues
    after = await _relay([Delta("a")], [Restarted(1), Delta("b")])
    assert after == [[Delta("a")], [WORKER_LOST]]  # never two attempts spliced
    cut = await _relay([Delta("a")])
    assert cut == [[Delta("a")], [ENDED]]


async def test_first_batch_raises_an_early_failure_with_its_status():
    from service.serving.jobs import first_batch

    with pytest.raises(errors.DeadlineExceeded):
        await first_batch(_events([JobFailed("deadline_exceeded", "late")]))
    with pytest.raises(errors.EngineError):
        await first_batch(_events())
