"""Distributed mode: gateway processes and worker processes that meet in Redis.

    gmai-vl gateway --redis-url URL --served-model-name NAME   (no engine, no torch)
    gmai-vl worker  --redis-url URL --model DIR                (one engine)

A gateway serves one model id; it is ready when Redis answers and a worker of
that model has a fresh heartbeat, and `/v1/models` lists the model only then.
A worker's `--metrics-port` also serves `/health/live` and `/health/ready`
(ready once the engine warmed up and the worker takes jobs: what probes use).
A worker stops taking work on SIGTERM, finishes in-flight jobs for
`drain_grace` seconds and hands back the rest (unacknowledged, so another
worker takes them over after the visibility timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal

from fastapi import FastAPI

from service.api.app import create_app
from service.api.serving_chat import ChatCompletions
from service.api.state import AppState
from service.audit import open_audit_sink
from service.config import Settings
from service.metrics import ServiceMetrics
from service.queue.redis_queue import RedisJobQueue
from service.server import make_engine, make_queue, make_security, redis_queue_gauges
from service.worker import Worker
from service.worker_http import WorkerHttp, worker_app

log = logging.getLogger("gmaivl.distributed")


def build_gateway(settings: Settings) -> FastAPI:
    model_id = settings.model_id()
    queue = make_queue(settings, model_id)
    assert isinstance(queue, RedisJobQueue), "a gateway needs --redis-url"
    metrics = ServiceMetrics()
    keys, limiter = make_security(settings)
    chat = ChatCompletions(settings, queue, metrics, model_id, limiter)
    audit = open_audit_sink(settings.audit_log)

    async def readiness() -> dict[str, bool]:
        reachable = await queue.ping()
        workers = await queue.live_workers() if reachable else 0
        metrics.live_workers.set(workers)
        return {"queue": reachable, "worker": workers > 0}

    async def served_models() -> list[str]:
        return [model_id] if all((await readiness()).values()) else []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await queue.close()
        await chat.aclose()
        if audit is not None:
            audit.close()

    state = AppState(
        settings=settings,
        model_id=model_id,
        queue=queue,
        metrics=metrics,
        chat=chat,
        readiness=readiness,
        served_models=served_models,
        before_scrape=functools.partial(redis_queue_gauges, queue, metrics),
        audit=audit,
        keys=keys,
    )
    return create_app(state, lifespan=lifespan)


def serve_gateway(settings: Settings) -> None:
    import uvicorn

    logging.getLogger().setLevel(settings.log_level.upper())  # ours too, not only uvicorn's
    uvicorn.run(
        build_gateway(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )


async def worker_readiness(worker: Worker) -> dict[str, bool]:
    """What a worker's readiness probe checks (service/worker_http.py)."""
    return {
        "model_loaded": worker.engine.ready(),
        "taking_jobs": worker.taking,
        "queue": await worker.queue.ping(),
    }


async def run_worker(settings: Settings) -> None:
    model_id = settings.model_id()
    metrics = ServiceMetrics()
    queue = make_queue(settings, model_id, metrics)
    engine = make_engine(settings)
    worker = Worker(
        queue,
        engine,
        metrics,
        heartbeat_interval=settings.heartbeat_interval,
        drain_grace=settings.drain_grace,
    )
    http = None
    if settings.metrics_port is not None:
        http = WorkerHttp(
            worker_app(metrics.registry, functools.partial(worker_readiness, worker)),
            settings.host,
            settings.metrics_port,
        )
        await http.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await engine.start()
        log.info("worker %s serving %r from Redis", getattr(queue, "worker_id", "?"), model_id)
        await worker.run()
    finally:
        await engine.stop()
        await queue.close()
        if http is not None:
            await http.stop()
    log.info("worker stopped")
