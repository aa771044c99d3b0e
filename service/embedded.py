"""The embedded default (`gmai-vl serve`): the gateway, the queue and one worker in
one process. The queue is in process, or in Redis with `--redis-url` (then other
gateways and workers may join).

`build_embedded` wires the parts; `serve` runs them under uvicorn. The engine
loads in the background after the port is open, so `/health/live` answers at
once and `/health/ready` turns 200 when the model can serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

from service import errors, tracing
from service.components import (
    in_process_queue,
    make_engine,
    model_catalog,
    redis_gateway_queue,
    redis_worker_queue,
)
from service.config import Settings
from service.engines.base import Engine
from service.gateway import build_gateway_app, run_uvicorn
from service.metrics import ServiceMetrics
from service.queue.protocols import GatewayQueue, WorkerQueue
from service.worker import Worker

log = logging.getLogger("gmaivl.embedded")


@dataclass
class EmbeddedService:
    app: FastAPI
    engine: Engine
    queue: GatewayQueue
    worker: Worker
    metrics: ServiceMetrics


def build_embedded(settings: Settings, engine: Engine | None = None) -> EmbeddedService:
    engine = engine or make_engine(settings)
    model_id = settings.model_id()
    metrics = ServiceMetrics()
    gateway_queue: GatewayQueue
    worker_queue: WorkerQueue
    if settings.redis_url is None:
        gateway_queue = worker_queue = in_process_queue(settings)
    else:
        gateway_queue = redis_gateway_queue(settings, model_id)
        worker_queue = redis_worker_queue(settings, model_id, metrics)
    worker = Worker(worker_queue, engine, metrics, heartbeat_interval=settings.heartbeat_interval)

    @contextlib.asynccontextmanager
    async def engine_and_worker() -> AsyncIterator[None]:
        async def start_then_work() -> None:
            # Jobs wait in the queue (bounded, with deadlines) until the engine can run them.
            try:
                await engine.start()
            except errors.ServiceError as exc:
                # Ours: the message says what is wrong and what to do; no traceback.
                log.error("engine %s cannot start: %s /health/ready stays 503", engine.name, exc)
                return
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
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(running, 5)
            if worker_queue is not gateway_queue:
                await worker_queue.close()
            await engine.stop()

    app = build_gateway_app(
        settings,
        gateway_queue,
        metrics,
        extra_checks={"model_loaded": engine.ready},
        catalog=model_catalog(settings),
        background=engine_and_worker,
    )
    return EmbeddedService(app, engine, gateway_queue, worker, metrics)


def serve(settings: Settings) -> None:
    tracing.configure("gmai-vl")
    run_uvicorn(build_embedded(settings).app, settings)
