"""Study reads, the orchestration: admit a read (a `ReadOrder`, from the HTTP API's
`POST /v1/dicom/reads` or any other door), run it in the background, answer for it
(`get`, `sr`, `cancel`), and end it (audit, metrics, webhook). The steps of one run
(instances, images, generation, SR) are in `runner`.

A read is admitted only when its study exists (QIDO-RS: else 404) and its
tenant may ask for it (model, lane, images, max_tokens; rate and concurrency
charged as for chat and held until the read ends). Everything after the 202
ends in the record: `completed`, or `failed` with a code, or `cancelled`.
In Redis mode each running read is renewed by its gateway; a gateway that
stops renewing (it died) has its reads taken over by another (`claim_orphan`),
which runs them again from the start.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service import errors
from service.audit import AuditSink, ReadAuditEvent, hash_uid
from service.config import Settings
from service.core.generation import Usage
from service.core.lanes import Lane
from service.media.dicomweb_client import READ, DicomWebClient
from service.media.fetch import HostPolicy, SafeFetcher
from service.media.resolve import MediaResolver
from service.metrics import ServiceMetrics
from service.reads.model import Read, ReadSpec, ReadStatus, new_read_id
from service.reads.runner import ReadAbandoned, ReadRunner, ResultSink
from service.reads.store import ReadStore
from service.reads.webhook import WebhookSender, check_webhook_url
from service.security.policy import Principal
from service.serving.context import RequestContext, ServedModel, lane_from_header, timeout_of
from service.serving.jobs import JobPath
from service.serving.leases import stop, sweep
from service.serving.limits import check_image_count, check_max_tokens
from service.serving.tenancy import TenantCharge, TenantGate

log = logging.getLogger("gmaivl.reads")


class ModelCheck(Protocol):
    async def check(self, model: str, served: ServedModel | None = None) -> object:
        """Raises 404 for an unknown model, 503 for a known one without a live worker;
        notes a known one in `served`."""


@dataclass(frozen=True)
class ReadOrder:
    """What a read is asked for, by whichever door (the HTTP API, the DICOM node)."""

    model: str
    study_instance_uid: str
    series_instance_uid: str | None = None
    sop_instance_uids: list[str] | None = None
    pacs: str | None = None  # default: the only PACS
    prompt: str | None = None  # default: a findings report (runner.DEFAULT_PROMPT)
    window: str | dict[str, Any] | None = None  # a preset name or {center, width, function}
    frames: list[int] | None = None
    max_tokens: int | None = None
    priority: Lane | None = None  # default: X-Priority, else the server's default lane
    store: bool = True  # STOW-RS the SR into the PACS
    webhook: str | None = None
    # a study received by the DICOM node (source "dimse"): its files, where the SR goes
    source: str = "dicomweb"
    calling_ae: str | None = None
    files: list[str] | None = None
    send_to: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


@dataclass(eq=False)
class ReadService:
    """Its collaborators are the gateway's, handed in by the app builder: the job path,
    the DICOMweb clients (their failures made read failures here), the media
    resolver, the tenant gate and the fetcher (for webhooks)."""

    settings: Settings
    jobs: JobPath
    metrics: ServiceMetrics
    store: ReadStore
    clients: Mapping[str, DicomWebClient]
    media: MediaResolver
    fetcher: SafeFetcher
    tenants: TenantGate
    catalog: ModelCheck
    audit: AuditSink | None = None
    results: ResultSink | None = None  # the DICOM node's SR sender

    def __post_init__(self) -> None:
        settings, fetcher = self.settings, self.fetcher
        self.owner = uuid.uuid4().hex  # this gateway, as the owner of the reads it runs
        self.pacs = {name: c.with_failures(READ) for name, c in self.clients.items()}
        fetch = settings.fetch
        self.webhook_policy = HostPolicy.of(fetch.allowed_hosts, fetch.allowed_networks)
        secret = settings.webhook_secret
        self.webhooks = (
            WebhookSender(
                fetcher,
                self.webhook_policy,
                secret.get_secret_value(),
                settings.webhook_max_attempts,
                settings.webhook_backoff,
            )
            if secret is not None
            else None
        )
        self.runner = ReadRunner(
            settings, self.jobs, self.store, self.pacs, self.media, self.metrics, self.results
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # admission

    async def submit(self, body: ReadOrder, ctx: RequestContext) -> Read:
        """Cheap checks first, then the tenant's policy, then the PACS (a network call)."""
        # 404 unknown, 503 known but no live worker
        await self.catalog.check(body.model, ctx.served)
        spec = self._spec(body, ctx)
        frames = len(spec.frames or [None])
        received = spec.source == "dimse"
        chosen = body.files if received else body.sop_instance_uids
        images = len(chosen or [None]) * frames
        self.tenants.check(ctx.principal, body.model, Lane(spec.lane), spec.max_tokens, images)
        check_image_count(images, spec.max_images, param="sop_instance_uids")
        if not received and not await self.pacs[spec.pacs].study_exists(  # type: ignore[index]
            body.study_instance_uid
        ):
            raise errors.NotFound(
                "The PACS has no such study.", param="study_instance_uid", code="study_not_found"
            )
        principal = ctx.principal
        read = Read(
            id=new_read_id(),
            model=body.model,
            study_instance_uid=body.study_instance_uid,
            spec=spec,
            tenant=principal.tenant if principal else None,
            key_id=principal.key_id if principal else None,
            requested_by=ctx.identity.to_json() if ctx.identity is not None else None,
            owner=self.owner,
        )
        charge = await self.tenants.admit(principal, spec.max_tokens, spec.timeout)
        try:
            await self.store.create(read)
        except BaseException:
            if charge is not None:
                await charge.release(None)
            raise
        self._start(read, charge, ctx.request_id)
        return read

    def _spec(self, body: ReadOrder, ctx: RequestContext) -> ReadSpec:
        """The read's parameters, validated, with the server's defaults filled in."""
        settings = self.settings
        max_tokens = body.max_tokens or settings.max_tokens_default
        check_max_tokens(max_tokens, settings.max_tokens_limit)
        if body.prompt is not None and len(body.prompt) > settings.max_text_chars:
            raise errors.InvalidRequest(
                f"The prompt is longer than {settings.max_text_chars} characters.",
                param="prompt",
                code="text_too_long",
            )
        if body.webhook is not None:
            if self.webhooks is None:
                raise errors.InvalidRequest(
                    "Webhooks are not enabled on this server (no webhook secret).",
                    param="webhook",
                    code="webhook_not_configured",
                )
            check_webhook_url(body.webhook, self.webhook_policy)
        max_images = settings.images.max_images_per_request
        policy = ctx.principal.policy if ctx.principal is not None else None
        if policy is not None and policy.max_images_per_request is not None:
            max_images = min(max_images, policy.max_images_per_request)
        received = body.source == "dimse"
        return ReadSpec(
            pacs=self._pacs_name(body.pacs) if not received or body.pacs is not None else None,
            source="dimse" if received else "dicomweb",
            calling_ae=body.calling_ae,
            files=body.files,
            send_to=body.send_to,
            response_format=body.response_format,
            series_instance_uid=body.series_instance_uid,
            sop_instance_uids=body.sop_instance_uids,
            prompt=body.prompt,
            window=body.window,
            frames=body.frames or None,
            max_tokens=max_tokens,
            max_images=max_images,
            lane=(
                body.priority or lane_from_header(ctx.priority, self.settings.default_priority)
            ).value,
            timeout=timeout_of(ctx.timeout, settings),
            store=body.store,
            webhook=body.webhook,
        )

    def _pacs_name(self, name: str | None) -> str:
        if name is None:
            if len(self.pacs) != 1:
                raise errors.InvalidRequest(
                    f"{len(self.pacs)} PACS are configured; name one in `pacs`.",
                    param="pacs",
                    code="pacs_required",
                )
            return next(iter(self.pacs))
        if name not in self.pacs:
            raise errors.InvalidRequest(
                "No PACS of that name is configured.", param="pacs", code="unknown_pacs"
            )
        return name

    # answering

    async def get(self, read_id: str, principal: Principal | None) -> Read:
        read = await self.store.get(read_id) if read_id.startswith("read_") else None
        # Another tenant's read does not exist for this caller.
        if read is None or (principal is not None and read.tenant != principal.tenant):
            raise errors.NotFound("No such read.", param="id", code="read_not_found")
        return read

    async def sr(self, read_id: str, principal: Principal | None) -> bytes:
        await self.get(read_id, principal)
        data = await self.store.get_sr(read_id)
        if data is None:
            raise errors.NotFound("The read has no SR (yet).", param="id", code="sr_not_found")
        return data

    async def cancel(self, read_id: str, principal: Principal | None, request_id: str) -> Read:
        read = await self.get(read_id, principal)
        if read.terminal:
            return read
        read.status = ReadStatus.CANCELLED
        if await self.store.update(read):
            self._cancelled.add(read_id)
            task = self._tasks.get(read_id)
            if task is not None:
                task.cancel()
            elif read.job_id is not None:  # running on another gateway: stop its job
                await self.jobs.cancel(read.job_id)
            self.metrics.dicom_reads.labels(ReadStatus.CANCELLED.value, "cancelled").inc()
            self._audit(read, "cancelled", request_id, None)
        return await self.get(read_id, principal)

    # running

    def _start(self, read: Read, charge: TenantCharge | None, request_id: str) -> None:
        task = asyncio.create_task(self._run(read, charge, request_id))
        self._tasks[read.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(read.id, None))

    async def _run(self, read: Read, charge: TenantCharge | None, request_id: str) -> None:
        usage = None
        self.metrics.dicom_reads_running.inc()
        try:
            async with asyncio.timeout(read.spec.timeout):
                await self.runner.run(read)
            usage = read.usage
        except ReadAbandoned:
            return  # cancelled elsewhere: that gateway recorded the outcome
        except asyncio.CancelledError:
            if read.id not in self._cancelled:
                raise  # the gateway is stopping: the read stays for another to take over
            self._cancelled.discard(read.id)
            return
        except TimeoutError:
            read.fail("deadline_exceeded", "The read timed out.")
        except errors.ServiceError as exc:
            read.fail(errors.code_of(exc), exc.message)
        except Exception as exc:  # a bug must not leave the read running forever
            log.error("read %s failed:\n%s", read.id, errors.redacted_traceback(exc))
            read.fail("server_error", "The read failed.")
        finally:
            self.metrics.dicom_reads_running.dec()
            if charge is not None:
                await charge.release(None if usage is None else _usage(usage))
        await self._finish(read, request_id)

    async def _finish(self, read: Read, request_id: str) -> None:
        if read.status not in (ReadStatus.COMPLETED, ReadStatus.FAILED):
            read.status = ReadStatus.FAILED
        if not await self.store.update(read):
            return  # cancelled meanwhile: the cancel is the outcome
        code = read.error["code"] if read.error else "ok"
        self.metrics.dicom_reads.labels(read.status.value, code).inc()
        self.metrics.dicom_read_duration.observe(max(time.time() - read.created, 0.0))
        delivery = None
        if read.spec.webhook is not None and self.webhooks is not None:
            delivery = await self.webhooks.deliver(read.spec.webhook, read.public(), read.id)
            self.metrics.webhook_deliveries.labels(delivery).inc()
        self._audit(read, code, request_id, delivery)

    def _audit(self, read: Read, outcome: str, request_id: str, webhook: str | None) -> None:
        """The read's one audit event (request events are the middleware's)."""
        if self.audit is None:
            return
        event = ReadAuditEvent(
            request_id=request_id,
            route="dicom.read",
            model=read.model,
            tenant=read.tenant,
            key_id=read.key_id,
            sub=(read.requested_by or {}).get("sub"),
            iss=(read.requested_by or {}).get("iss"),
            images=len(read.instances),
            outcome=outcome,
            latency_ms=round(max(time.time() - read.created, 0.0) * 1000, 3),
            read_id=read.id,
            study_instance_uid_sha256=hash_uid(read.study_instance_uid),
            webhook=webhook,
        )
        for uid in read.instances:
            event.note_sop_instance_uid(uid)
        self.audit.write(event)

    # lifecycle (Redis mode: renew our reads, take over orphans)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(
            sweep(
                self.store,
                self.owner,
                self.settings.read_lease,
                self._tasks.keys,
                self._take_over,
                "read",
            )
        )

    async def _take_over(self, orphan: Read) -> None:
        self._start(orphan, None, orphan.id)

    # the DICOM node's reads (it holds their files; see service.dicom_node.node)

    async def is_over(self, read_id: str) -> bool | None:
        """True: ended; False: running; None: no such record (lost with a restart)."""
        read = await self.store.get(read_id)
        return None if read is None else read.terminal

    async def resume(self, read_id: str) -> bool:
        """Runs again, from the start, a read whose process stopped (the node restarted);
        False when its record is gone (the caller submits the study again)."""
        read = await self.store.get(read_id)
        if read is None:
            return False
        if not read.terminal and read_id not in self._tasks:
            read.owner = self.owner
            self._start(read, None, read.id)
        return True

    async def aclose(self) -> None:
        await stop([*self._tasks.values(), self._sweeper])
        await self.store.close()


def _usage(usage: dict[str, Any]) -> Usage:
    return Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
