"""The queue contract, run against every implementation (Redis joins this list)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from service import errors
from service.core.generation import Delta, Finish, GenerationRequest, SamplingParams, Usage
from service.core.jobs import Job, JobFailed
from service.core.lanes import Lane
from service.queue.memory import InProcessJobQueue
from tests.service.queue.redis_pair import RedisQueuePair


@pytest.fixture(params=["memory", "redis"])
async def make_queue(request):
    made = []

    def make(**kwargs):
        if request.param == "memory":
            return InProcessJobQueue(**kwargs)
        server = request.getfixturevalue("redis_server")
        queue = RedisQueuePair(server.url, model=f"m-{uuid.uuid4().hex[:8]}", **kwargs)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()


def job(lane: Lane = Lane.routine, deadline_in: float = 30.0, enqueued_ago: float = 0.0) -> Job:
    rid = uuid.uuid4().hex
    now = time.time()
    return Job(
        id=rid,
        model="m",
        lane=lane,
        request=GenerationRequest(rid, [{"role": "user", "content": []}], SamplingParams(4)),
        deadline=now + deadline_in,
        enqueued_at=now - enqueued_ago,
    )


async def test_take_serves_highest_lane_first(make_queue):
    q = make_queue()
    jobs = {lane: job(lane) for lane in (Lane.batch, Lane.routine, Lane.stat, Lane.urgent)}
    for j in jobs.values():
        await q.submit(j)
    taken = [(await q.take(timeout=0)).lane for _ in range(4)]
    assert taken == [Lane.stat, Lane.urgent, Lane.routine, Lane.batch]
    assert await q.take(timeout=0) is None


async def test_take_many_takes_what_waits_in_take_order_up_to_its_limit(make_queue):
    q = make_queue()
    lanes = [Lane.batch, Lane.routine, Lane.stat, Lane.urgent, Lane.routine]
    submitted = [job(lane) for lane in lanes]
    for j in submitted:
        await q.submit(j)
    first = await q.take_many(timeout=0, limit=3)
    assert [j.lane for j in first] == [Lane.stat, Lane.urgent, Lane.routine]
    rest = await q.take_many(timeout=0, limit=8)
    assert [j.lane for j in rest] == [Lane.routine, Lane.batch]
    assert {j.id for j in first + rest} == {j.id for j in submitted}  # each once
    assert await q.take_many(timeout=0.01, limit=8) == []


async def test_take_many_skips_cancelled_and_expired_jobs(make_queue):
    q = make_queue()
    cancelled, expired, live = job(), job(deadline_in=-0.01), job()
    for j in (cancelled, expired, live):
        await q.submit(j)
    await q.cancel(cancelled.id)
    assert [j.id for j in await q.take_many(timeout=0, limit=8)] == [live.id]
    batches = [b async for b in q.events(expired.id)]
    assert batches[-1][-1].code == "deadline_exceeded"


async def test_take_many_waits_for_a_submit(make_queue):
    q = make_queue()
    j = job()
    taker = asyncio.create_task(q.take_many(timeout=5, limit=4))
    await asyncio.sleep(0.05)
    await q.submit(j)
    assert [t.id for t in await asyncio.wait_for(taker, 2)] == [j.id]


async def test_fifo_within_a_lane(make_queue):
    q = make_queue()
    first, second = job(), job()
    await q.submit(first)
    await q.submit(second)
    assert (await q.take(timeout=0)).id == first.id
    assert (await q.take(timeout=0)).id == second.id


async def test_aging_keeps_low_lanes_from_starving(make_queue):
    q = make_queue(aging_seconds=1.0)
    old_batch = job(Lane.batch, enqueued_ago=5.0)  # aged past every lane
    await q.submit(old_batch)
    await q.submit(job(Lane.stat))
    assert (await q.take(timeout=0)).id == old_batch.id


async def test_full_lane_refuses_with_retry_after(make_queue):
    q = make_queue(max_depth=2)
    await q.submit(job())
    await q.submit(job())
    with pytest.raises(errors.Overloaded) as info:
        await q.submit(job())
    assert 1 <= info.value.retry_after <= 60
    await q.submit(job(Lane.stat))  # other lanes have their own bound


async def test_events_stream_in_order_until_terminal(make_queue):
    q = make_queue()
    j = job()
    await q.submit(j)
    taken = await q.take(timeout=0)
    await q.publish(taken.id, Delta("a"))
    await q.publish(taken.id, Delta("b"))
    await q.publish(taken.id, Finish("length", Usage(3, 2)))
    await q.complete(taken.id)
    batches = [b async for b in q.events(j.id)]
    assert batches == [[Delta("a"), Delta("b"), Finish("length", Usage(3, 2))]]


async def test_cancelled_queued_job_never_runs(make_queue):
    q = make_queue()
    j = job()
    await q.submit(j)
    await q.cancel(j.id)
    assert await q.take(timeout=0) is None


async def test_cancel_reaches_running_worker(make_queue):
    q = make_queue()
    j = job()
    await q.submit(j)
    await q.take(timeout=0)
    fired = asyncio.Event()
    q.on_cancel(j.id, fired.set)
    await asyncio.sleep(0)
    assert not fired.is_set()
    await q.cancel(j.id)
    await asyncio.wait_for(fired.wait(), 1)
    late = asyncio.Event()
    q.on_cancel(j.id, late.set)  # registering after the fact fires at once
    await asyncio.wait_for(late.wait(), 1)


async def test_unregistered_cancel_callback_does_not_fire(make_queue):
    q = make_queue()
    j = job()
    await q.submit(j)
    await q.take(timeout=0)
    fired = []
    unregister = q.on_cancel(j.id, lambda: fired.append(1))
    unregister()
    await q.cancel(j.id)
    await asyncio.sleep(0)
    assert fired == []


async def test_expired_queued_job_is_dropped_with_deadline_event(make_queue):
    q = make_queue()
    j = job(deadline_in=-0.01)
    await q.submit(j)
    assert await q.take(timeout=0) is None
    batches = [b async for b in q.events(j.id)]
    assert batches == [[JobFailed("deadline_exceeded", "The request expired while queued.")]]
    assert isinstance(batches[0][0].to_exception(), errors.DeadlineExceeded)


async def test_events_arrive_as_they_are_published(make_queue):
    q = make_queue()
    j = job()
    await q.submit(j)
    await q.take(timeout=0)
    batches = q.events(j.id)
    await q.publish(j.id, Delta("a"))
    assert await anext(batches) == [Delta("a")]
    await q.publish(j.id, Delta("b"))
    await q.publish(j.id, Finish("stop", Usage(1, 2)))
    assert await anext(batches) == [Delta("b"), Finish("stop", Usage(1, 2))]
    with pytest.raises(StopAsyncIteration):
        await anext(batches)


async def test_events_end_at_the_deadline_even_if_nothing_is_published(make_queue):
    q = make_queue()
    j = job(deadline_in=0.1)
    await q.submit(j)
    await q.take(timeout=0)  # taken by a worker that then hangs
    started = time.monotonic()
    batches = [b async for b in q.events(j.id)]
    assert batches[-1][-1].code == "deadline_exceeded"
    assert time.monotonic() - started < 1.0


async def test_take_waits_for_a_submit(make_queue):
    q = make_queue()
    j = job()
    taker = asyncio.create_task(q.take(timeout=5))
    await asyncio.sleep(0)
    await q.submit(j)
    assert (await asyncio.wait_for(taker, 1)).id == j.id


async def test_take_times_out_empty(make_queue):
    q = make_queue()
    assert await q.take(timeout=0.01) is None


async def test_depths_per_lane(make_queue):
    q = make_queue()
    await q.submit(job(Lane.stat))
    await q.submit(job(Lane.batch))
    await q.submit(job(Lane.batch))
    depths = await q.depths()
    assert depths[Lane.stat] == 1 and depths[Lane.batch] == 2 and depths[Lane.routine] == 0


async def test_oldest_age_per_lane(make_queue):
    """The per-lane autoscaling signal (KEDA, alerts): the wait of each lane's oldest job."""
    q = make_queue()
    await q.submit(job(Lane.urgent, enqueued_ago=5.0))
    await q.submit(job(Lane.urgent, enqueued_ago=1.0))
    ages = await q.oldest_ages()
    assert 4.5 < ages[Lane.urgent] < 7.0
    assert ages[Lane.stat] == ages[Lane.routine] == ages[Lane.batch] == 0.0
    await q.take(timeout=0)  # the oldest leaves the queue: the next one is the oldest now
    assert (await q.oldest_ages())[Lane.urgent] < 3.0


async def test_abandoning_the_event_stream_cancels_the_job(make_queue):
    q = make_queue()
    j = job()
    await q.submit(j)
    await q.take(timeout=0)
    fired = asyncio.Event()
    q.on_cancel(j.id, fired.set)
    batches = q.events(j.id)
    await q.publish(j.id, Delta("a"))
    await anext(batches)
    await batches.aclose()  # the reader went away mid-answer
    await asyncio.wait_for(fired.wait(), 1)


async def test_deadline_on_a_running_job_cancels_it(make_queue):
    q = make_queue()
    j = job(deadline_in=0.05)
    await q.submit(j)
    await q.take(timeout=0)
    fired = asyncio.Event()
    q.on_cancel(j.id, fired.set)
    [batch] = [b async for b in q.events(j.id)]
    assert batch[-1].code == "deadline_exceeded"
    await asyncio.wait_for(fired.wait(), 1)


async def test_concurrent_publishers_lose_nothing_and_keep_order(make_queue):
    q = make_queue()
    jobs = [job() for _ in range(20)]
    for j in jobs:
        await q.submit(j)
    for _ in jobs:
        await q.take(timeout=0)

    async def produce(k: int, j: Job) -> None:
        for i in range(30):
            for _ in range(k % 4):  # out of phase: some publish while a batch is flushing
                await asyncio.sleep(0)
            await q.publish(j.id, Delta(str(i)))
        await q.publish(j.id, Finish("length", Usage(1, 30)))

    await asyncio.gather(*(produce(k, j) for k, j in enumerate(jobs)))
    for j in jobs:
        events = [e async for batch in q.events(j.id) for e in batch]
        assert events == [Delta(str(i)) for i in range(30)] + [Finish("length", Usage(1, 30))]
