"""The response store's semantics (service/responses/store.py), run against both
stores: the in-memory one and the Redis one on a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from service.redis.response_store import RedisResponseStore
from service.responses.store import (
    InMemoryResponseStore,
    ResponseStore,
    StoredResponse,
    Viewer,
)

IMAGE_ITEM = {
    "id": "msg_1",
    "type": "message",
    "role": "user",
    "content": [
        {"type": "input_text", "text": "What is seen?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"},
    ],
}


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def a_response(status: str = "completed", tenant: str | None = "a", **changes) -> StoredResponse:
    response_id = new_response_id()
    record = StoredResponse(
        id=response_id,
        response={"id": response_id, "object": "response", "status": status, "output": []},
        tenant=tenant,
        input_items=[IMAGE_ITEM],
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server) -> AsyncIterator[ResponseStore]:
    if request.param == "memory":
        made: ResponseStore = InMemoryResponseStore()
    else:
        redis_store = RedisResponseStore(redis_server.url, ttl=60)
        await redis_store.redis.flushdb()
        made = redis_store
    try:
        yield made
    finally:
        await made.close()


async def test_a_record_and_its_input_round_trip(store: ResponseStore):
    record = a_response(run={"lane": "batch"}, owner="gw-1")
    await store.create(record)
    got = await store.get(record.id, Viewer("a"))
    assert got is not None and got.input_items == []  # get() leaves the images where they are
    got.input_items = record.input_items
    assert got == record
    assert await store.get_input(record.id, Viewer("a")) == [IMAGE_ITEM]
    assert await store.get(new_response_id(), Viewer("a")) is None
    assert await store.get_input(new_response_id(), Viewer("a")) is None


async def test_a_users_response_is_that_users_alone(store: ResponseStore):
    """Created with a user's token: that user sees it, not another user of the same
    tenant, not the tenant's keys; created with a key: anyone of the tenant."""
    mine = a_response(tenant="a", user="u1")
    await store.create(mine)
    assert await store.get(mine.id, Viewer("a", "u1")) is not None
    assert await store.get_input(mine.id, Viewer("a", "u1")) == [IMAGE_ITEM]
    for other in (Viewer("a", "u2"), Viewer("a"), Viewer("b", "u1")):
        assert await store.get(mine.id, other) is None
        assert await store.get_input(mine.id, other) is None
        assert not await store.delete(mine.id, other)
    keyed = a_response(tenant="a")
    await store.create(keyed)
    assert await store.get(keyed.id, Viewer("a", "u2")) is not None
    assert await store.get(keyed.id, Viewer("a")) is not None
    assert await store.delete(mine.id, Viewer("a", "u1"))


async def test_a_tenant_never_sees_another_tenants_response(store: ResponseStore):
    record = a_response(tenant="a")
    await store.create(record)
    assert await store.get(record.id, Viewer("b")) is None
    # auth off does not open a tenant's records
    assert await store.get(record.id, Viewer(None)) is None
    assert await store.get_input(record.id, Viewer("b")) is None
    assert not await store.delete(record.id, Viewer("b"))
    assert await store.get(record.id, Viewer("a")) is not None  # still there for its owner
    untenanted = a_response(tenant=None)
    await store.create(untenanted)
    assert await store.get(untenanted.id, Viewer("a")) is None
    assert await store.get(untenanted.id, Viewer(None)) is not None


async def test_update_never_overwrites_a_terminal_record(store: ResponseStore):
    record = a_response(status="queued", run={"lane": "batch"})
    await store.create(record)
    record.response["status"] = "in_progress"
    assert await store.update(record)
    cancelled = a_response(status="cancelled")
    cancelled.id = record.id
    assert await store.update(cancelled)
    record.response["status"] = "completed"
    assert not await store.update(record)  # the gateway still generating loses
    stored = await store.get(record.id, Viewer("a"))
    assert stored is not None and stored.status == "cancelled"
    assert await store.get_input(record.id, Viewer("a")) == [IMAGE_ITEM]  # update keeps the input
    assert not await store.update(a_response(status="queued"))  # unknown: update creates nothing


async def test_delete_removes_record_and_input(store: ResponseStore):
    record = a_response()
    await store.create(record)
    assert await store.delete(record.id, Viewer("a"))
    assert await store.get(record.id, Viewer("a")) is None
    assert await store.get_input(record.id, Viewer("a")) is None
    assert not await store.delete(record.id, Viewer("a"))


async def test_records_expire_after_the_ttl(redis_server):
    stores: list[ResponseStore] = [
        InMemoryResponseStore(ttl=1),
        RedisResponseStore(redis_server.url, ttl=1),
    ]
    records = [a_response() for _ in stores]
    for store, record in zip(stores, records, strict=True):
        await store.create(record)
        assert await store.get(record.id, Viewer("a")) is not None
    await asyncio.sleep(1.6)
    for store, record in zip(stores, records, strict=True):
        assert await store.get(record.id, Viewer("a")) is None
        assert await store.get_input(record.id, Viewer("a")) is None
        await store.close()


async def test_memory_store_is_bounded_oldest_finished_first():
    store = InMemoryResponseStore(max_responses=3)
    running = a_response(status="in_progress")
    done = [a_response() for _ in range(3)]
    await store.create(running)
    for record in done:
        await store.create(record)
    # the oldest finished record went; the older running one stays
    assert await store.get(running.id, Viewer("a")) is not None
    assert await store.get(done[0].id, Viewer("a")) is None
    assert all([await store.get(r.id, Viewer("a")) is not None for r in done[1:]])
    many = [a_response(status="in_progress") for _ in range(3)]
    for record in many:
        await store.create(record)
    assert [await store.get(r.id, Viewer("a")) is not None for r in many] == [True] * 3
    # nothing finished left: the oldest goes
    assert await store.get(running.id, Viewer("a")) is None


async def test_redis_hands_a_silent_gateways_background_response_to_another(redis_server):
    store = RedisResponseStore(redis_server.url, ttl=60)
    try:
        await store.redis.flushdb()
        done = a_response(status="queued", run={"lane": "batch"}, owner="a")
        running = a_response(status="queued", run={"lane": "batch"}, owner="a")
        foreground = a_response(status="completed")  # not background: never in the running set
        for record in (done, running, foreground):
            await store.create(record)
        done.response["status"] = "completed"
        assert await store.update(done)
        assert await store.claim_orphan("b", stale_after=30) is None  # renewed just now
        claimed = await store.claim_orphan("b", stale_after=0)
        assert claimed is not None and claimed.id == running.id and claimed.owner == "b"
        assert await store.claim_orphan("c", stale_after=0.5) is None  # b holds it now
        assert await store.redis.ttl(f"gmaivl:resp:{running.id}") > 0
        assert await store.redis.ttl(f"gmaivl:resp:{running.id}:input") > 0
        await store.renew(running.id, "b")
        assert await store.claim_orphan("c", stale_after=0.5) is None
    finally:
        await store.close()
