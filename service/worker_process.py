"""The `gmai-vl worker` process: one engine taking jobs from Redis.

    gmai-vl worker --redis-url URL --model DIR

Its `--metrics-port` also serves `/health/live` and `/health/ready` (ready once
the engine warmed up and the worker takes jobs: what probes use). On SIGTERM it
stops taking work, finishes in-flight jobs for `drain_grace` seconds and hands
back the rest (unacknowledged, so another worker takes them over after the
visibility timeout).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from service import tracing
from service.components import make_engine, redis_worker_queue
from service.config import Settings
from service.metrics import ServiceMetrics
from service.redis.connection import describe_url
from service.worker import Worker
from service.worker_http import WorkerHttp, worker_app

log = logging.getLogger("gmaivl.worker")


async def worker_readiness(worker: Worker) -> dict[str, bool]:
    """What a worker's readiness probe checks (service/worker_http.py)."""
    return {
        "model_loaded": worker.engine.ready(),
        "taking_jobs": worker.taking,
        "queue": await worker.queue.ping(),
    }


async def run_worker_process(settings: Settings) -> None:
    tracing.configure("gmai-vl-worker")
    model_id = settings.model_id()
    metrics = ServiceMetrics()
    queue = redis_worker_queue(settings, model_id, metrics)
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
        log.info(
            "worker serving %r%s from %s",
            model_id,
            f" and {len(settings.lora)} LoRA adapters" if settings.lora else "",
            describe_url(settings.redis_url or ""),  # without credentials
        )
        await worker.run()
    finally:
        await engine.stop()
        await queue.close()
        if http is not None:
            await http.stop()
        tracing.shutdown()  # flush the last spans
    log.info("worker stopped")
