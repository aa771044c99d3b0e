"""The gateway: the one function that builds the HTTP app for every mode, and the
`gmai-vl gateway` process (no engine, no torch; workers meet it in Redis).

    gmai-vl gateway --redis-url URL --served-model-name NAME

A gateway serves one model id; it is ready when its queue answers and a worker
of that model is alive (a fresh heartbeat). In the Redis mode `/v1/models`
lists the model only then; the embedded mode (`service.embedded`) lists it
from the start and adds its engine's state to readiness.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from service import tracing
from service.api.app import create_app
from service.api.serving_chat import ChatCompletions
from service.api.serving_reads import ReadService
from service.api.state import AppState
from service.audit import open_audit_sink
from service.components import make_read_store, make_security, redis_gateway_queue
from service.config import Settings
from service.metrics import ServiceMetrics
from service.queue.protocols import GatewayQueue

log = logging.getLogger("gmaivl.gateway")


def build_gateway_app(
    settings: Settings,
    queue: GatewayQueue,
    metrics: ServiceMetrics,
    *,
    extra_checks: dict[str, Callable[[], bool]] | None = None,
    list_model_only_when_ready: bool = True,
    background: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The app for `settings`: chat over `queue`, auth and tenant limits, audit.

    `extra_checks` join readiness (e.g. the embedded engine's `model_loaded`);
    `background` runs for the app's lifetime around it (the embedded worker).
    """
    model_id = settings.model_id()
    keys, limiter = make_security(settings)
    chat = ChatCompletions(settings, queue, metrics, model_id, limiter)
    audit = open_audit_sink(settings.audit_log)
    reads = ReadService(
        settings,
        queue,
        metrics,
        model_id,
        make_read_store(settings),
        chat.media.fetcher,
        chat.tenants,
        audit,
    )
    checks = extra_checks or {}

    async def readiness() -> dict[str, bool]:
        reachable = await queue.ping()
        workers = await queue.live_workers() if reachable else 0
        return {
            **{name: check() for name, check in checks.items()},
            "queue": reachable,
            "worker": workers > 0,
        }

    async def served_models() -> list[str]:
        if list_model_only_when_ready and not all((await readiness()).values()):
            return []
        return [model_id]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with background() if background is not None else contextlib.nullcontext():
            await reads.start()
            try:
                yield
            finally:
                await reads.aclose()
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
        audit=audit,
        keys=keys,
        reads=reads,
    )
    return create_app(state, lifespan=lifespan)


def run_uvicorn(app: FastAPI, settings: Settings) -> None:
    import uvicorn

    logging.getLogger().setLevel(settings.log_level.upper())  # ours too, not only uvicorn's
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,  # paths and headers only; request logs are audit events
        )
    finally:
        tracing.shutdown()  # flush the last spans


def serve_gateway(settings: Settings) -> None:
    """`gmai-vl gateway`: this app over the Redis queue."""
    tracing.configure("gmai-vl-gateway")
    queue = redis_gateway_queue(settings, settings.model_id())
    run_uvicorn(build_gateway_app(settings, queue, ServiceMetrics()), settings)
