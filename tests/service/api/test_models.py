"""The model catalog: known vs live, 404 vs 503 model_unavailable, the cache."""

from __future__ import annotations

import time

import pytest

from service import errors
from service.api.models import ModelCatalog
from service.queue.protocols import ModelSeen


def announced(*seen: ModelSeen):
    calls = []

    async def read() -> list[ModelSeen]:
        calls.append(1)
        return list(seen)

    read.calls = calls  # type: ignore[attr-defined]
    return read


async def test_embedded_catalog_serves_its_configured_models():
    catalog = ModelCatalog({"base": None, "adapter": "base"})
    assert [(m.id, m.parent) for m in await catalog.live()] == [
        ("adapter", "base"),
        ("base", None),
    ]
    await catalog.check("adapter")
    with pytest.raises(errors.ModelNotFound):
        await catalog.check("other")


async def test_known_model_without_worker_is_unavailable_unknown_is_not_found():
    now = time.time()
    catalog = ModelCatalog(
        {"configured": None},
        announced(ModelSeen("live", None, 2, now), ModelSeen("gone", None, 0, now - 60)),
    )
    assert [m.id for m in await catalog.live()] == ["live"]
    assert (await catalog.check("live")).live_workers == 2
    for model in ("gone", "configured"):
        with pytest.raises(errors.ModelUnavailable) as err:
            await catalog.check(model)
        response = errors.to_error_response(err.value)
        assert response.status_code == 503
        assert response.body["error"]["code"] == "model_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
    with pytest.raises(errors.ModelNotFound):
        await catalog.check("never-seen")


async def test_registry_read_at_most_once_per_cache_period():
    read = announced(ModelSeen("m", None, 1, time.time()))
    catalog = ModelCatalog({}, read, cache_seconds=60)
    for _ in range(5):
        await catalog.check("m")
    assert len(read.calls) == 1  # type: ignore[attr-defined]


def test_tenant_policy_holds_per_model_behind_one_gateway(redis_server, tmp_path):
    """A Redis gateway with two models' workers (fake engines, in the app's lifetime):
    a tenant allowed one model sees and uses only that one."""
    import asyncio
    import contextlib

    import httpx

    from service.config import Settings
    from service.engines.fake import FakeEngine
    from service.gateway import build_gateway_app
    from service.metrics import ServiceMetrics
    from service.redis.gateway_queue import RedisGatewayQueue
    from service.redis.worker_queue import RedisWorkerQueue
    from service.security.keys import KeyFile
    from service.security.policy import TenantPolicy
    from service.worker import Worker
    from tests.conftest import ThreadedServer

    keys = KeyFile(tenants={"derm": TenantPolicy(models=("derm",)), "all": TenantPolicy()})
    made = {tenant: keys.create(tenant) for tenant in keys.tenants}
    keys.save(tmp_path / "keys.json")
    settings = Settings(
        redis_url=redis_server.url,
        api_keys_file=tmp_path / "keys.json",
        heartbeat_interval=0.2,
    )
    queue = RedisGatewayQueue(redis_server.url, model="general", heartbeat_interval=0.2)

    @contextlib.asynccontextmanager
    async def workers():
        running = []
        for model in ("general", "derm"):
            side = RedisWorkerQueue(redis_server.url, model=model, heartbeat_interval=0.2)
            worker = Worker(side, FakeEngine(token_interval=0), heartbeat_interval=0.2)
            running.append((worker, side, asyncio.create_task(worker.run())))
        yield
        for worker, side, task in running:
            worker.stop()
            await task
            await side.close()

    app = build_gateway_app(
        settings,
        queue,
        ServiceMetrics(),
        catalog=ModelCatalog({}, queue.models, cache_seconds=0),
        background=workers,
    )
    with ThreadedServer(app) as server:

        def call(tenant: str, model: str) -> httpx.Response:
            return httpx.post(
                server.base_url + "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 2},
                headers={"Authorization": f"Bearer {made[tenant]}"},
            )  # fmt: skip

        def listed(tenant: str) -> list[str]:
            r = httpx.get(
                server.base_url + "/v1/models", headers={"Authorization": f"Bearer {made[tenant]}"}
            )
            return sorted(m["id"] for m in r.json()["data"])

        deadline = time.monotonic() + 10
        while listed("all") != ["derm", "general"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed("all") == ["derm", "general"]
        assert listed("derm") == ["derm"]
        assert call("derm", "derm").status_code == 200
        refused = call("derm", "general")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert call("all", "general").status_code == 200


def failing_after(answers: int, *seen: ModelSeen):
    """A registry that answers `answers` times, then does not (Redis is down)."""
    calls = []

    async def read() -> list[ModelSeen]:
        calls.append(1)
        if len(calls) > answers:
            raise errors.NotReady("The model registry is unavailable.", retry_after=1)
        return list(seen)

    read.calls = calls  # type: ignore[attr-defined]
    return read


async def test_registry_outage_keeps_the_last_known_set_with_its_age():
    now = time.time()
    catalog = ModelCatalog(
        {"configured": None},
        failing_after(1, ModelSeen("live", None, 1, now)),
        cache_seconds=0,
    )
    await catalog.check("live")
    assert catalog.age() is not None and catalog.answering
    for model in ("live", "configured"):
        with pytest.raises(errors.NotReady) as err:
            await catalog.check(model)
        assert err.value.code == "not_ready" and err.value.retry_after
    with pytest.raises(errors.ModelNotFound):
        await catalog.check("never-seen")
    assert [m.id for m in await catalog.live()] == ["live"]
    assert not catalog.answering and catalog.age() >= 0


async def test_registry_never_answered_nothing_is_called_unknown():
    catalog = ModelCatalog({}, failing_after(0), cache_seconds=0)
    with pytest.raises(errors.NotReady) as err:
        await catalog.check("anything")
    assert not isinstance(err.value, errors.ModelUnavailable) and catalog.age() is None


async def test_a_failed_registry_read_is_cached_too():
    read = failing_after(0)
    catalog = ModelCatalog({}, read, cache_seconds=60)
    for _ in range(5):
        with pytest.raises(errors.NotReady):
            await catalog.check("m")
    assert len(read.calls) == 1  # type: ignore[attr-defined]
