"""The read store's semantics (service/reads/store.py), run against both stores: the
in-memory one and the Redis one on a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.reads.model import Read, ReadSpec, new_read_id
from service.reads.store import InMemoryReadStore, ReadStore
from service.redis.read_store import RedisReadStore


def a_read(**changes) -> Read:
    read = Read(id=new_read_id(), model="m", study_instance_uid="1.2.3", spec=ReadSpec("pacs"))
    for key, value in changes.items():
        setattr(read, key, value)
    return read


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server) -> AsyncIterator[ReadStore]:
    if request.param == "memory":
        made: ReadStore = InMemoryReadStore()
    else:
        redis_store = RedisReadStore(redis_server.url, ttl=60)
        await redis_store.redis.flushdb()
        made = redis_store
    try:
        yield made
    finally:
        await made.close()


async def test_a_record_round_trips(store: ReadStore):
    read = a_read(instances=["1.2.3.4"], usage={"prompt_tokens": 3, "completion_tokens": 4})
    read.spec.window = {"center": 40.0, "width": 400.0, "function": "LINEAR"}
    await store.create(read)
    assert await store.get(read.id) == read
    assert await store.get(new_read_id()) is None


async def test_update_never_overwrites_a_terminal_record(store: ReadStore):
    read = a_read()
    await store.create(read)
    read.status = "running"
    assert await store.update(read)
    cancelled = a_read(id=read.id, status="cancelled")
    assert await store.update(cancelled)
    read.status, read.answer = "completed", "late"
    assert not await store.update(read)  # the gateway still running it loses
    stored = await store.get(read.id)
    assert stored is not None and stored.status == "cancelled" and stored.answer is None
    assert not await store.update(a_read())  # unknown: nothing is created by update


async def test_the_sr_is_kept_beside_the_record(store: ReadStore):
    read = a_read()
    await store.create(read)
    assert await store.get_sr(read.id) is None
    await store.put_sr(read.id, b"DICM\x00\xff")
    assert await store.get_sr(read.id) == b"DICM\x00\xff"


async def test_redis_hands_a_silent_gateways_read_to_another(redis_server):
    store = RedisReadStore(redis_server.url, ttl=60)
    try:
        await store.redis.flushdb()
        done, running = a_read(status="queued", owner="a"), a_read(status="queued", owner="a")
        await store.create(done)
        await store.create(running)
        done.status = "completed"
        await store.update(done)
        assert await store.claim_orphan("b", stale_after=30) is None  # renewed just now
        claimed = await store.claim_orphan("b", stale_after=0)
        assert claimed is not None and claimed.id == running.id and claimed.owner == "b"
        assert await store.claim_orphan("c", stale_after=0.5) is None  # b holds it now
        assert await store.redis.ttl(f"gmaivl:read:{running.id}") > 0
    finally:
        await store.close()


async def test_redis_never_hands_over_a_dicom_nodes_read(redis_server):
    """Only the node that received a study holds its files: a gateway taking its read
    over would fail it. The node resumes it from its spool when it comes back."""
    store = RedisReadStore(redis_server.url, ttl=60)
    try:
        await store.redis.flushdb()
        received = a_read(owner="node")
        received.spec.source, received.spec.files = "dimse", ["/spool/x/1.dcm"]
        await store.create(received)
        assert await store.claim_orphan("gateway", stale_after=0) is None
        stored = await store.get(received.id)
        assert stored is not None and stored.status == "queued" and stored.owner == "node"
        assert stored.public()["source"] == "dimse"
    finally:
        await store.close()
