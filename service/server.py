"""The embedded default: gateway + one worker + the in-process queue, one process.

`build_embedded` wires the parts; `serve` runs them under uvicorn. The engine
loads in the background after the port is open, so `/health/live` answers at
once and `/health/ready` turns 200 when the model can serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

from service.api.app import create_app
from service.api.serving_chat import ChatCompletions
from service.api.state import AppState
from service.audit import open_audit_sink
from service.config import Settings
from service.engines.base import Engine
from service.metrics import ServiceMetrics
from service.queue.base import JobQueue
from service.queue.memory import InProcessJobQueue
from service.queue.redis_queue import RedisJobQueue
from service.security.keystore import KeyStore, key_store_for
from service.security.limits import InMemoryTenantLimiter, TenantLimiter
from service.security.redis_limits import RedisTenantLimiter
from service.worker import Worker

log = logging.getLogger("gmaivl.server")


@dataclass
class EmbeddedService:
    app: FastAPI
    engine: Engine
    queue: JobQueue
    worker: Worker
    metrics: ServiceMetrics


def make_engine(settings: Settings) -> Engine:
    if settings.engine == "fake":
        from service.engines.fake import FakeEngine

        return FakeEngine(
            token_interval=settings.fake_token_interval, max_concurrency=settings.max_concurrency
        )
    if settings.engine == "transformers":
        from service.engines.transformers_engine import TransformersEngine

        if settings.model is None:
            raise ValueError("the transformers engine needs a checkpoint (--model)")
        return TransformersEngine(
            settings.model, device=settings.device, max_concurrency=settings.max_concurrency
        )
    if settings.engine == "vllm":
        from service.engines.vllm_engine import VllmEngine, VllmOptions

        if settings.model is None:
            raise ValueError("the vllm engine needs a checkpoint (--model)")
        v = settings.vllm
        return VllmEngine(
            settings.model,
            VllmOptions(
                dtype=v.dtype,
                max_model_len=v.max_model_len,
                max_num_seqs=settings.max_concurrency,
                tensor_parallel_size=v.tensor_parallel_size,
                gpu_memory_utilization=v.gpu_memory_utilization,
                kv_cache_memory_bytes=v.kv_cache_memory_bytes,
                limit_images_per_prompt=max(1, settings.images.max_images_per_request),
                enforce_eager=v.enforce_eager,
            ),
        )
    if settings.engine == "openai":
        from service.engines.openai_engine import OpenAIForwardEngine

        if settings.upstream_url is None:
            raise ValueError("the openai engine needs --upstream-url")
        key = settings.upstream_api_key
        return OpenAIForwardEngine(
            settings.upstream_url,
            settings.upstream_model or settings.model_id(),
            api_key=key.get_secret_value() if key is not None else None,
            max_concurrency=settings.max_concurrency,
        )
    raise ValueError(f"unknown engine {settings.engine!r} (transformers | vllm | openai | fake)")


def make_queue(
    settings: Settings, model_id: str, metrics: ServiceMetrics | None = None
) -> JobQueue:
    """The in-process queue, or the Redis queue when `redis_url` is set."""
    if settings.redis_url is None:
        return InProcessJobQueue(
            max_depth=settings.queue_max_depth, aging_seconds=settings.aging_seconds
        )
    return RedisJobQueue(
        settings.redis_url,
        model=model_id,
        max_depth=settings.queue_max_depth,
        aging_seconds=settings.aging_seconds,
        visibility_timeout=settings.visibility_timeout,
        heartbeat_interval=settings.heartbeat_interval,
        max_deliveries=settings.max_deliveries,
        result_ttl=settings.result_ttl,
        metrics=metrics,
    )


def make_security(settings: Settings) -> tuple[KeyStore | None, TenantLimiter | None]:
    """The key store and the tenant limiter (shared in Redis when the queue is), or
    (None, None) when authentication is off: without tenants there is nothing to limit."""
    keys = key_store_for(
        settings.auth,
        settings.api_keys_file,
        settings.host,
        settings.api_keys_reload_interval,
        settings.max_tenant_labels,
    )
    if keys is None:
        return None, None
    if settings.redis_url is not None:
        return keys, RedisTenantLimiter(settings.redis_url)
    return keys, InMemoryTenantLimiter()


async def redis_queue_gauges(queue: RedisJobQueue, metrics: ServiceMetrics) -> None:
    """Gauges only Redis can answer, refreshed when /metrics is scraped."""
    if await queue.ping():
        for lane, age in (await queue.oldest_ages()).items():
            metrics.queue_oldest_age.labels(lane.value).set(age)
        metrics.live_workers.set(await queue.live_workers())


async def embedded_queue_gauges(
    queue: InProcessJobQueue, worker: Worker, metrics: ServiceMetrics
) -> None:
    """The same gauges for the in-process queue and its one worker."""
    for lane, age in (await queue.oldest_ages()).items():
        metrics.queue_oldest_age.labels(lane.value).set(age)
    metrics.live_workers.set(1 if worker.alive else 0)


def build_embedded(settings: Settings, engine: Engine | None = None) -> EmbeddedService:
    engine = engine or make_engine(settings)
    model_id = settings.model_id()
    metrics = ServiceMetrics()
    queue = make_queue(settings, model_id, metrics)
    worker = Worker(queue, engine, metrics, heartbeat_interval=settings.heartbeat_interval)
    keys, limiter = make_security(settings)
    chat = ChatCompletions(settings, queue, metrics, model_id, limiter)
    audit = open_audit_sink(settings.audit_log)

    async def readiness() -> dict[str, bool]:
        return {"model_loaded": engine.ready(), "queue": await queue.ping(), "worker": worker.alive}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def start_then_work() -> None:
            # Jobs wait in the queue (bounded, with deadlines) until the engine can run them.
            try:
                await engine.start()
            except Exception:
                log.exception("engine %s failed to start; /health/ready stays 503", engine.name)
                return
            log.info("engine %s ready: serving %r", engine.name, model_id)
            await worker.run()

        running = asyncio.create_task(start_then_work())
        try:
            yield
        finally:
            worker.stop()
            await queue.close()
            await chat.aclose()
            if audit is not None:
                audit.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(running, 5)
            await engine.stop()

    state = AppState(
        settings=settings,
        model_id=model_id,
        queue=queue,
        metrics=metrics,
        chat=chat,
        readiness=readiness,
        before_scrape=(
            functools.partial(redis_queue_gauges, queue, metrics)
            if isinstance(queue, RedisJobQueue)
            else functools.partial(embedded_queue_gauges, queue, worker, metrics)
        ),
        audit=audit,
        keys=keys,
    )
    app = create_app(state, lifespan=lifespan)
    return EmbeddedService(app=app, engine=engine, queue=queue, worker=worker, metrics=metrics)


def serve(settings: Settings) -> None:
    import uvicorn

    logging.getLogger().setLevel(settings.log_level.upper())  # ours too, not only uvicorn's
    service = build_embedded(settings)
    uvicorn.run(
        service.app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # paths and headers only, but we keep request logs to audit events
    )
