"""The worker against the in-process queue, with the fake engine to isolate it."""

from __future__ import annotations

import asyncio
import time
import uuid

from service import errors
from service.core.generation import Delta, Finish, GenerationRequest, SamplingParams
from service.core.jobs import Job, JobFailed
from service.core.lanes import Lane
from service.engines.fake import FakeEngine
from service.metrics import ServiceMetrics
from service.queue.memory import InProcessJobQueue
from service.worker import Worker


def make_job(max_tokens=3, deadline_in=30.0, lane=Lane.routine) -> Job:
    rid = uuid.uuid4().hex
    return Job(
        rid,
        "m",
        lane,
        GenerationRequest(
            rid,
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            SamplingParams(max_tokens),
        ),
        deadline=time.time() + deadline_in,
    )


async def collect(queue, job_id):
    return [event async for batch in queue.events(job_id) for event in batch]


async def test_burst_runs_every_job_to_a_terminal_event():
    queue, engine = InProcessJobQueue(), FakeEngine()
    await engine.start()
    jobs = [make_job() for _ in range(5)]
    for job in jobs:
        await queue.submit(job)
    metrics = ServiceMetrics()
    await Worker(queue, engine, metrics).run(burst=True)
    for job in jobs:
        events = await collect(queue, job.id)
        assert events[:3] == [Delta("The"), Delta(" image"), Delta(" shows")]
        assert isinstance(events[-1], Finish)
    assert metrics.registry.get_sample_value("gmaivl_completion_tokens_total", {"model": "m"}) == 15


async def test_free_slots_are_filled_in_one_take_up_to_the_cap():
    class CountingQueue(InProcessJobQueue):
        limits: list[int] = []

        async def take_many(self, timeout, limit):
            jobs = await super().take_many(timeout, limit)
            self.limits.append(limit)
            return jobs

    queue, engine = CountingQueue(), FakeEngine(token_interval=0.01, max_concurrency=12)
    await engine.start()
    jobs = [make_job() for _ in range(12)]
    for job in jobs:
        await queue.submit(job)
    await Worker(queue, engine).run(burst=True)
    assert queue.limits[:2] == [8, 4]  # the cap (TAKE_AT_MOST), then the free rest
    for job in jobs:
        assert isinstance((await collect(queue, job.id))[-1], Finish)


async def test_never_runs_more_than_engine_concurrency():
    queue, engine = InProcessJobQueue(), FakeEngine(token_interval=0.005, max_concurrency=2)
    await engine.start()
    peak = 0
    original = engine.generate

    async def counting(request):
        nonlocal peak
        async for event in original(request):
            peak = max(peak, len(engine.running))
            yield event

    engine.generate = counting
    for _ in range(6):
        await queue.submit(make_job(max_tokens=5))
    await Worker(queue, engine).run(burst=True)
    assert peak == 2


async def test_cancel_while_running_aborts_the_engine():
    queue, engine = InProcessJobQueue(), FakeEngine(token_interval=0.01)
    await engine.start()
    job = make_job(max_tokens=10_000)
    await queue.submit(job)
    metrics = ServiceMetrics()
    worker = asyncio.create_task(Worker(queue, engine, metrics).run(burst=True))
    await anext(queue.events(job.id))
    await queue.cancel(job.id)
    await asyncio.wait_for(worker, 2)
    assert engine.aborted == [job.id]
    assert engine.running == set()
    assert engine.tokens_emitted < 100
    assert (
        metrics.registry.get_sample_value("gmaivl_engine_aborts_total", {"reason": "cancelled"})
        == 1
    )


async def test_deadline_while_running_aborts_and_reports():
    queue, engine = InProcessJobQueue(), FakeEngine(token_interval=0.01)
    await engine.start()
    job = make_job(max_tokens=10_000, deadline_in=0.2)
    await queue.submit(job)
    await asyncio.wait_for(Worker(queue, engine).run(burst=True), 2)
    events = await collect(queue, job.id)
    assert events[-1] == JobFailed("deadline_exceeded", "The request ran past its deadline.")
    assert engine.aborted == [job.id]


async def test_engine_errors_become_job_failures_and_the_worker_survives():
    queue, engine = InProcessJobQueue(), FakeEngine()
    await engine.start()

    async def broken(request):
        if request.sampling.max_tokens == 1:
            raise errors.InvalidRequest("too long")
        raise RuntimeError("boom")
        yield  # pragma: no cover

    engine.generate = broken
    bad_input, crash = make_job(max_tokens=1), make_job(max_tokens=2)
    await queue.submit(bad_input)
    await queue.submit(crash)
    await Worker(queue, engine).run(burst=True)
    assert await collect(queue, bad_input.id) == [JobFailed("invalid_request", "too long")]
    [failure] = await collect(queue, crash.id)
    assert failure.code == "engine_error" and "boom" not in failure.message
