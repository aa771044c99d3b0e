"""What only the Redis queue does: redelivery after a silent worker, dead letters,
images by reference, expiring keys, worker liveness."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import pytest
import redis.asyncio as aioredis

from service import errors
from service.core.generation import Delta, Finish, ImageInput, Usage
from service.core.jobs import JobFailed, Restarted
from service.redis import keys
from service.redis.gateway_queue import RedisGatewayQueue
from service.redis.worker_queue import RedisWorkerQueue
from tests.service.queue.redis_pair import RedisQueuePair
from tests.service.queue.test_contract import job


@pytest.fixture
async def make(redis_server):
    made: list[RedisQueuePair] = []
    model = f"m-{uuid.uuid4().hex[:8]}"

    def factory(**kwargs) -> RedisQueuePair:
        queue = RedisQueuePair(redis_server.url, model=model, **kwargs)
        made.append(queue)
        return queue

    yield factory
    for queue in made:
        await queue.close()


async def events(queue, job_id):
    return [e async for batch in queue.events(job_id) for e in batch]


async def a_reader_blocked_in_xread(queue):
    """A submitted job, its event stream, and the task reading its first batch, once the
    gateway's inbox reader is blocked in XREAD."""
    j = job()
    await queue.submit(j)
    stream = queue.events(j.id)
    reading = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.2)
    return j, stream, reading


async def test_silent_worker_job_is_redelivered_then_dead_lettered(make):
    fast = {"visibility_timeout": 0.2, "heartbeat_interval": 0.05, "max_deliveries": 2}
    gateway, dead, alive = make(), make(worker_id="dead", **fast), make(worker_id="b", **fast)
    j = job()
    await gateway.submit(j)
    assert (await dead.take(timeout=0)).id == j.id  # ... and its worker dies silently
    await asyncio.sleep(0.3)
    retried = await alive.take(timeout=0)
    assert retried.id == j.id and alive.redeliveries == 1
    await asyncio.sleep(0.3)  # the second worker dies too
    third = make(worker_id="c", **fast)
    assert await third.take(timeout=0.5) is None  # past max_deliveries: not run again
    got = await events(gateway, j.id)
    assert got[0] == Restarted(2)
    assert got[-1].code == "dead_letter"
    assert isinstance(got[-1].to_exception(), errors.EngineError)
    assert await third.redis.xlen(keys.dead_letters(third.model)) == 1


async def test_heartbeat_keeps_a_long_job_from_being_reclaimed(make):
    fast = {"visibility_timeout": 0.2, "heartbeat_interval": 0.05}
    gateway, busy, other = make(), make(worker_id="busy", **fast), make(worker_id="o", **fast)
    j = job()
    await gateway.submit(j)
    await busy.take(timeout=0)
    for _ in range(8):  # 0.4 s of work, refreshed every 0.05 s
        await busy.heartbeat()
        await asyncio.sleep(0.05)
        assert await other.take(timeout=0) is None
    assert await other.live_workers() == 1  # only the worker that beats is alive


async def test_images_travel_by_reference_and_everything_expires(make, redis_server):
    gateway, worker = make(result_ttl=1), make(result_ttl=1)
    image = ImageInput(2, 1, b"\x01\x02\x03\x04\x05\x06")
    j = job()
    j.request.images.append(image)
    await gateway.submit(j)
    raw = await gateway.redis.xrange(keys.lane_stream(gateway.model, j.lane))
    assert image.rgb not in raw[0][1][b"job"]  # a hash, not the pixels
    taken = await worker.take(timeout=0)
    assert taken.request.images == [image]
    await worker.publish(j.id, Delta("a"))
    await worker.publish(j.id, Finish("stop", Usage(1, 1)))
    await worker.complete(j.id)
    assert [e for e in await events(gateway, j.id)] == [Delta("a"), Finish("stop", Usage(1, 1))]
    await gateway.cancel(j.id)  # leaves a flag, which must expire as well
    client = aioredis.Redis.from_url(redis_server.url)
    await asyncio.sleep(1.2)
    digest = hashlib.sha256(image.rgb).hexdigest()
    per_request = [
        gateway._inbox.key,
        keys.cancel_flag(j.id),
        keys.tries(j.id),
        keys.image(digest),
    ]
    assert await client.exists(*per_request) == 0
    await client.aclose()


async def test_unavailable_redis_is_not_ready():
    gateway = RedisGatewayQueue("redis://127.0.0.1:9/0", model="m")
    worker = RedisWorkerQueue("redis://127.0.0.1:9/0", model="m")
    assert not await gateway.ping() and not await worker.ping()
    assert await gateway.live_workers() == 0
    with pytest.raises(errors.NotReady):
        await gateway.submit(job())
    with pytest.raises(errors.NotReady):
        await worker.take(timeout=0)
    await gateway.close()
    await worker.close()


async def test_failure_events_round_trip(make):
    gateway, worker = make(), make()
    j = job()
    await gateway.submit(j)
    await worker.take(timeout=0)
    failure = JobFailed("context_length_exceeded", "too long", "max_tokens")
    await worker.publish(j.id, failure)
    started = time.monotonic()
    assert await events(gateway, j.id) == [failure]
    assert time.monotonic() - started < 1


async def test_oldest_age_per_lane_is_the_autoscaling_signal(make):
    gateway = make()
    waiting = job()
    await gateway.submit(waiting)
    await asyncio.sleep(0.05)
    ages = await gateway.oldest_ages()
    assert ages[waiting.lane] >= 0.05
    assert all(age == 0 for lane, age in ages.items() if lane != waiting.lane)
    await make().take(timeout=0)  # delivered: no longer waiting
    assert (await gateway.oldest_ages())[waiting.lane] == 0


async def test_jobs_go_to_their_models_lanes_and_workers_announce_their_models(redis_server):
    """Two models in one Redis: each worker takes only its model's jobs (hash-tagged
    keys per model); the heartbeat announces ids and parents; leaving keeps the id known."""
    suffix = uuid.uuid4().hex[:6]
    base, adapter, other = f"base-{suffix}", f"lora-{suffix}", f"other-{suffix}"
    gateway = RedisGatewayQueue(redis_server.url, model=base)
    lora_worker = RedisWorkerQueue(redis_server.url, model=base, adapters=[adapter])
    other_worker = RedisWorkerQueue(redis_server.url, model=other)
    try:
        assert keys.lane_stream(base, job().lane).count("{" + base + "}") == 1
        for model in (adapter, other):
            j = job()
            j.model = model
            await gateway.submit(j)
        await lora_worker.heartbeat()
        await other_worker.heartbeat()
        taken = await lora_worker.take(timeout=0)
        assert taken is not None and taken.model == adapter
        assert await lora_worker.take(timeout=0) is None  # the other model's job is not ours
        other_job = await other_worker.take(timeout=0)
        assert other_job is not None and other_job.model == other
        seen = {m.id: m for m in await gateway.models()}
        assert seen[base].parent is None and seen[adapter].parent == base
        assert seen[other].live_workers == 1
        await other_worker.leave()
        seen = {m.id: m for m in await gateway.models()}
        assert seen[other].live_workers == 0  # still known: 503, not 404
        assert await gateway.live_workers(adapter) == 1
    finally:
        for q in (gateway, lora_worker, other_worker):
            await q.close()


async def test_a_job_lost_with_redis_is_resubmitted_under_a_new_attempt():
    """Redis restarts empty under a waiting job: the gateway resubmits it once Redis
    answers, as a new attempt; the reader sees `Restarted`, then the new attempt's
    answer; the old attempt is cancelled."""
    from service.processes import RedisServer

    server = RedisServer().start()
    queue = RedisQueuePair(server.url, model="m", heartbeat_interval=0.2)
    try:
        j, stream, reading = await a_reader_blocked_in_xread(queue)
        server.stop()
        await asyncio.sleep(0.3)
        server.start()  # same port, empty: the job is gone
        first = await asyncio.wait_for(reading, 10)
        assert first == [Restarted(0)]
        retry = await queue.take(timeout=5)
        assert retry is not None and retry.id != j.id and retry.model == "m"
        assert retry.request.messages == j.request.messages
        await queue.publish(retry.id, Delta("ok"))
        await queue.publish(retry.id, Finish("stop", Usage(1, 1)))
        await queue.complete(retry.id)
        rest = [e async for batch in stream for e in batch]
        assert rest == [Delta("ok"), Finish("stop", Usage(1, 1))]
        assert queue.gateway.resubmitted == 1
        client = aioredis.Redis.from_url(server.url)
        assert await client.exists(keys.cancel_flag(j.id)) == 1  # the old attempt
        await client.aclose()
    finally:
        await queue.close()
        server.stop()


async def test_a_broken_read_from_the_same_server_resubmits_nothing(redis_server):
    """The gateway's connections are killed under a waiting job (as a dropped
    connection, or a read timed out in a starved gateway, would end them): the same
    server still holds the job and its events, so the reader goes on where it was;
    nothing is resubmitted, nothing cancelled."""
    queue = RedisQueuePair(redis_server.url, model=f"m-{uuid.uuid4().hex[:8]}")
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        j = job()
        await queue.submit(j)
        taken = await queue.take(timeout=5)
        assert taken is not None and taken.id == j.id
        await queue.publish(j.id, Delta("a"))
        stream = queue.events(j.id)
        assert await asyncio.wait_for(anext(stream), 5) == [Delta("a")]
        reading = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.2)  # the inbox reader is blocked in XREAD
        await admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.5)  # the reader has failed and found the same server
        await queue.publish(j.id, Delta("b"))
        await queue.publish(j.id, Finish("stop", Usage(1, 2)))
        await queue.complete(j.id)
        got = await asyncio.wait_for(reading, 5)
        rest = [e async for batch in stream for e in batch]
        assert got + rest == [Delta("b"), Finish("stop", Usage(1, 2))]
        assert queue.gateway.resubmitted == 0
        assert await admin.exists(keys.cancel_flag(j.id)) == 0
    finally:
        await admin.aclose()
        await queue.close()


async def test_a_server_that_may_not_say_who_it_is_is_taken_for_a_new_one(redis_server):
    """An ACL user without INFO: after a broken read the gateway cannot tell the same
    server from a new one, so it resubmits (the safe side, as before run ids)."""
    user = f"u{uuid.uuid4().hex[:8]}"
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-info"],
    )  # fmt: skip
    url = redis_server.url.replace("redis://", f"redis://{user}:pw@", 1)
    queue = RedisQueuePair(url, model=f"m-{uuid.uuid4().hex[:8]}")
    try:
        _, _, reading = await a_reader_blocked_in_xread(queue)
        await admin.client_kill_filter(_type="normal", skipme=True)
        assert await asyncio.wait_for(reading, 10) == [Restarted(0)]
        assert queue.gateway.resubmitted == 1
    finally:
        await queue.close()
        await admin.acl_deluser(user)
        await admin.aclose()


async def test_known_models_stay_known_while_redis_does_not_answer():
    """A discovery-mode gateway (no configured model) while Redis is down: the registry
    read is `not_ready`, not "no models"; the catalog keeps the last set with its age,
    a model in it is 503 `not_ready` (retryable), one never seen 404; back to normal
    once Redis answers."""
    from service.api.models import ModelCatalog
    from service.processes import RedisServer

    server = RedisServer().start()
    gateway = RedisGatewayQueue(server.url, model="unused")
    worker = RedisWorkerQueue(server.url, model="served")
    catalog = ModelCatalog({}, gateway.models, cache_seconds=0)
    try:
        await worker.heartbeat()
        assert (await catalog.check("served")).live_workers == 1
        server.stop()
        with pytest.raises(errors.NotReady):
            await gateway.models()
        with pytest.raises(errors.NotReady) as err:
            await catalog.check("served")
        assert not isinstance(err.value, errors.ModelNotFound)
        response = errors.to_error_response(err.value)
        assert response.status_code == 503 and response.body["error"]["code"] == "not_ready"
        assert int(response.headers["Retry-After"]) >= 1
        with pytest.raises(errors.ModelNotFound):
            await catalog.check("never-seen")
        assert [m.id for m in await catalog.live()] == ["served"]  # the last known list
        assert catalog.age() is not None and catalog.age() >= 0
        server.start()  # same port, empty: the worker announces itself again
        await worker.heartbeat()
        assert (await catalog.check("served")).live_workers == 1
        assert catalog.answering
    finally:
        for q in (gateway, worker):
            await q.close()
        server.stop()
