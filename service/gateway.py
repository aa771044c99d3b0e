"""The gateway: the one function that builds the HTTP app for every mode, and the
`gmai-vl gateway` process (no engine, no torch; workers meet it in Redis).

    gmai-vl gateway --redis-url URL [--served-model-name NAME]

A Redis gateway serves every model id its workers announce (`api/models.py`):
`/v1/models` lists those with a live worker, a known model without one is 503
`model_unavailable`, `--served-model-name` makes a model known before any
worker announced it. It is ready when its queue answers and some worker is
alive. The embedded mode (`service.embedded`) serves its own model, listed
from the start, and adds its engine's state to readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from service import tracing
from service.api.app import create_app
from service.api.console import SignIn
from service.api.models import ModelCatalog
from service.api.responses_api.serving import ResponsesService
from service.api.serving_chat import ChatCompletions
from service.api.state import AppState
from service.audit import open_audit_sink
from service.components import (
    make_authenticator,
    make_read_store,
    make_response_store,
    make_security,
    redis_gateway_queue,
)
from service.config import Settings
from service.media.dicomweb import Pacs
from service.media.dicomweb_client import DicomWebClient
from service.media.resolve import MediaResolver, gateway_fetcher
from service.metrics import ServiceMetrics
from service.queue.protocols import GatewayQueue
from service.reads.service import ReadService
from service.security.authenticate import Authenticator
from service.serving.jobs import JobPath
from service.serving.tenancy import TenantGate

log = logging.getLogger("gmaivl.gateway")


def build_gateway_app(
    settings: Settings,
    queue: GatewayQueue,
    metrics: ServiceMetrics,
    *,
    extra_checks: dict[str, Callable[[], bool]] | None = None,
    catalog: ModelCatalog | None = None,
    background: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The app for `settings`: chat, Responses and study reads over `queue`, auth and tenant
    limits, audit. The composition root: every shared part (the one `SafeFetcher`,
    the `MediaResolver`, the `TenantGate`, the DICOMweb clients, the job path) is
    built here, once, and handed to the services that use it.

    `extra_checks` join readiness (e.g. the embedded engine's `model_loaded`);
    `catalog` says which models it answers for (default: the process's own);
    `background` runs for the app's lifetime around it (the embedded worker).
    """
    model_id = settings.model_id()
    catalog = catalog or ModelCatalog({model_id: None})
    keys, limiter = make_security(settings)
    audit = open_audit_sink(settings.audit_log)
    fetcher = gateway_fetcher(settings.images, settings.fetch)
    auth = make_authenticator(settings, keys, fetcher)
    pacs_entries = settings.pacs_entries()
    media = MediaResolver(settings.images, settings.fetch, pacs_entries, fetcher)
    dicomweb = {e.name: DicomWebClient(Pacs.from_entry(e), fetcher) for e in pacs_entries}
    tenants = TenantGate(limiter, metrics)
    jobs = JobPath(queue, metrics)
    node_on = settings.dicom.port is not None  # the DICOM node (docs/pacs.md)
    if node_on:  # pynetdicom is imported only by a process that runs the node
        from service.dicom_node.build import build_node, result_sender
    results = result_sender(settings, dicomweb, metrics) if node_on else None
    chat = ChatCompletions(settings, jobs, metrics, catalog, media, tenants)
    responses = ResponsesService(settings, chat, make_response_store(settings), metrics)
    reads = ReadService(
        settings,
        jobs,
        metrics,
        make_read_store(settings),
        dicomweb,
        media,
        fetcher,
        tenants,
        catalog,
        audit,
        results,
    )
    node = build_node(settings, reads, metrics, keys, set(dicomweb)) if node_on else None
    checks = extra_checks or {}

    async def readiness() -> dict[str, bool]:
        reachable = await queue.ping()
        if not reachable:
            alive = False
        elif catalog.announced is not None:  # any model's worker: one down model is a 503
            alive = bool(await catalog.live()) and catalog.answering
        else:
            alive = await queue.live_workers() > 0
        return {
            **{name: check() for name, check in checks.items()},
            "queue": reachable,
            "worker": alive,
        }

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with background() if background is not None else contextlib.nullcontext():
            # The IdP's keys now, not at the first user's request; in the background, so
            # an IdP that is slow to answer does not hold the gateway's start.
            warming = asyncio.create_task(auth.warm()) if auth is not None else None
            await reads.start()
            await responses.start()
            if node is not None:
                await node.start()
            try:
                yield
            finally:
                if node is not None:
                    await node.stop()
                await responses.aclose()
                if warming is not None:
                    warming.cancel()
                await reads.aclose()
                await queue.close()
                await fetcher.aclose()
                if limiter is not None:
                    await limiter.close()
                if audit is not None:
                    audit.close()

    state = AppState(
        settings=settings,
        model_id=model_id,
        queue=queue,
        metrics=metrics,
        chat=chat,
        readiness=readiness,
        models=catalog,
        media=media,
        dicomweb=dicomweb,
        audit=audit,
        auth=auth,
        sign_in=console_sign_in(settings, auth),
        reads=reads,
        responses=responses,
    )
    return create_app(state, lifespan=lifespan)


def console_sign_in(settings: Settings, auth: Authenticator | None) -> SignIn | None:
    """The console's "Sign in" when a console client is configured beside the IdP."""
    oidc = settings.oidc
    if auth is None or auth.tokens is None or oidc.console_client_id is None:
        return None
    assert oidc.issuer is not None
    return SignIn(
        oidc.issuer, oidc.console_client_id, oidc.console_scope, auth.tokens.jwks.metadata
    )


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


def serve_gateway(settings: Settings, service_name: str = "gmai-vl-gateway") -> None:
    """`gmai-vl gateway` (and `gmai-vl dicom-node`): this app over the Redis queue."""
    tracing.configure(service_name)
    queue = redis_gateway_queue(settings, settings.model_id())
    configured = {settings.served_model_name: None} if settings.served_model_name else {}
    catalog = ModelCatalog(configured, queue.models)
    run_uvicorn(build_gateway_app(settings, queue, ServiceMetrics(), catalog=catalog), settings)
