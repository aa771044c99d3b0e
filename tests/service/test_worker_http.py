"""The worker's HTTP port: readiness that means "can serve", liveness, metrics."""

from __future__ import annotations

import asyncio
import time

import httpx

from service.engines.fake import FakeEngine
from service.metrics import ServiceMetrics
from service.processes import Cluster
from service.queue.memory import InProcessJobQueue
from service.worker import Worker
from service.worker_http import worker_app
from service.worker_process import worker_readiness


async def test_readiness_follows_the_engine_and_the_worker_loop():
    metrics = ServiceMetrics()
    engine = FakeEngine(token_interval=0)
    worker = Worker(InProcessJobQueue(), engine, metrics)
    app = worker_app(metrics.registry, lambda: worker_readiness(worker))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://w") as c:
        loading = await c.get("/health/ready")
        assert loading.status_code == 503
        assert loading.json()["checks"] == {
            "model_loaded": False,
            "taking_jobs": False,
            "queue": True,
        }
        assert (await c.get("/health/live")).status_code == 200
        await engine.start()
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0)  # the loop starts: the worker takes jobs
        assert (await c.get("/health/ready")).status_code == 200
        worker.stop()  # SIGTERM: draining workers are not ready
        assert (await c.get("/health/ready")).json()["checks"]["taking_jobs"] is False
        await running
        scrape = (await c.get("/metrics")).text
        assert "gmaivl_queue_wait_seconds" in scrape


def wait_status(url: str, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=1)
            if response.status_code == status:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} never answered {status}")


def test_worker_process_is_ready_only_while_redis_answers(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        worker = cluster.add_worker(engine=("fake",))
        wait_status(worker + "/health/ready", 200)
        cluster.redis.stop()
        down = wait_status(worker + "/health/ready", 503)
        assert down.json()["checks"]["queue"] is False
        assert httpx.get(worker + "/health/live", timeout=2).status_code == 200
    finally:
        cluster.close()
