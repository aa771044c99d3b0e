"""A worker's own HTTP port: `/metrics`, `/health/live`, `/health/ready`.

A worker has no API; Prometheus and Kubernetes probes reach it here. The port
opens before the engine loads, so scrapes and startup probes see a loading
worker rather than a refused connection. `/health/ready` turns 200 only when

- the engine is ready: for vLLM that is after a warm-up request with an image
  succeeded (a configuration vLLM accepts at start-up can still fail there),
- the worker is taking jobs (not yet started, or draining after SIGTERM: 503),
- the queue answers.

`/health/live` answers while the event loop runs: a wedged loop stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def worker_app(registry: CollectorRegistry, readiness: ReadinessCheck) -> Starlette:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        checks = await readiness()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/health/live", live),
            Route("/health/ready", ready),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the worker owns SIGTERM (it drains)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WorkerHttp:
    """The worker's HTTP server, run as a task of the worker's event loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not bind
                raise RuntimeError("the worker's HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
