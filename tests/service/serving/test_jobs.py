"""The one job path (chat and reads): submit counts a full lane's refusal; collect
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
