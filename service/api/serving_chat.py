"""Chat completions, the orchestration: plan, admit the tenant, resolve images,
enqueue, and answer (JSON or SSE).

The router in `routes.py` is thin; the request's plan is `request_plan`, the
message translation `core.chat_format`, the bodies `responses`. `start` (plan,
tenant, images, submit) is shared with the Responses API (`responses_api`), which
renders the same job's events in its own shape. Everything
raises `service.errors` only. Order matters for cost: cheap checks first, image
decoding (in threads) next, admission last, so a refused request costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from service import errors, tracing
from service.api.disconnect import ClientWatch
from service.api.models import ModelCatalog
from service.api.protocol import ChatCompletionRequest
from service.api.request_limits import RequestLimits, check_shape
from service.api.request_plan import RequestPlan, plan_request
from service.api.responses import DONE, ChunkWriter, completion
from service.audit import AuditEvent
from service.config import Settings
from service.core.chat_format import to_template_messages
from service.core.generation import Delta, GenerationRequest, ImageInput, Usage
from service.core.jobs import Job, JobEvent, JobFailed
from service.media.resolve import ImageRequest, MediaResolver, ResolvedImage
from service.metrics import ServiceMetrics
from service.serving.context import RequestContext
from service.serving.images import resolve_images
from service.serving.jobs import Events, JobPath, collect, first_batch, relayed
from service.serving.limits import check_image_count
from service.serving.tenancy import TenantCharge, TenantGate


@dataclass(frozen=True)
class ResolvedMessages:
    messages: list[dict[str, Any]]  # template form, one {"type": "image"} per image
    images: list[ImageInput]
    dicom: list[dict[str, Any]]  # extension: frames and window per DICOM image part
    parts: list[ResolvedImage]  # per image part of the plan, in order


@dataclass
class Started:
    """A chat request planned, admitted, its images resolved and its job submitted:
    what an endpoint renders (chat here, Responses in `responses_api`). Whoever holds
    it ends it: `finish(usage)` when the answer is out, or `abandon()`."""

    job: Job
    plan: RequestPlan
    resolved: ResolvedMessages
    events: Events
    charge: TenantCharge | None
    jobs: JobPath
    _released: bool = False

    async def release(self, usage: Usage | None) -> None:
        """Settle the tenant's charge (once): with the usage, or None when nothing ran."""
        if not self._released:
            self._released = True
            if self.charge is not None:
                await self.charge.release(usage)

    async def finish(self, usage: Usage | None) -> None:
        """The answer is out (or the client left): close the events, which cancels a job
        still running, and settle the charge."""
        await self.events.aclose()
        await self.release(usage)

    async def abandon(self) -> None:
        """Gone, failed or late: stop the work, close the events, free the charge."""
        try:
            await self.jobs.cancel(self.job.id)
        finally:
            await self.finish(None)


_UNTRACED = contextlib.nullcontext()


@dataclass(eq=False)
class ChatCompletions:
    """Its collaborators are the gateway's, handed in by the app builder."""

    settings: Settings
    jobs: JobPath
    metrics: ServiceMetrics
    catalog: ModelCatalog
    media: MediaResolver
    tenants: TenantGate

    def __post_init__(self) -> None:
        settings = self.settings
        self.limits = RequestLimits(
            settings.max_json_depth, settings.max_messages, settings.max_text_chars
        )

    async def create(
        self,
        body: ChatCompletionRequest,
        ctx: RequestContext,
        watch: ClientWatch,
    ) -> dict[str, Any] | AsyncGenerator[str, None]:
        """A completion dict, or for `stream=True` an iterator of SSE lines that
        starts only after the first token (so early errors keep their status)."""
        started = await self.start(body, ctx)
        if not body.stream:
            response_span = tracing.start_span("response", {"gmaivl.stream": False})
            try:
                with watch.guard():
                    answer, usage = await self._collect(started, ctx)
            except BaseException:
                await started.abandon()
                raise
            finally:
                tracing.end_span(response_span)
            await started.finish(usage)
            return answer
        response_span = tracing.start_span("response", {"gmaivl.stream": True})
        try:
            with watch.guard():
                first = await first_batch(started.events)
        except BaseException:
            tracing.end_span(response_span)
            await started.abandon()
            raise
        self.observe_ttft(started, ctx)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # it owns the started job now
        return self._stream(started, first, include_usage, ctx.audit, response_span)

    async def start(self, body: ChatCompletionRequest, ctx: RequestContext) -> Started:
        """Plan, admit the tenant, resolve the images, submit the job: the one way every
        chat-shaped request (chat, Responses) reaches the queue. Refusals raise here,
        before any output; the caller owns what it gets back."""
        # 404 unknown, 503 known but no live worker
        await self.catalog.check(body.model, ctx.served)
        check_shape(body, self.limits)
        plan = plan_request(body, ctx.priority, ctx.timeout, self.settings)
        # a span only where there is a tenant to admit (auth on)
        with tracing.span("tenant.admit") if ctx.principal is not None else _UNTRACED:
            self.tenants.check(
                ctx.principal, body.model, plan.lane, plan.sampling.max_tokens, plan.image_count
            )
            charge = await self.tenants.admit(ctx.principal, plan.sampling.max_tokens, plan.timeout)
        try:
            return await self._submit(body, plan, ctx, charge)
        except BaseException:
            if charge is not None:
                await charge.release(None)
            raise

    async def _submit(
        self,
        body: ChatCompletionRequest,
        plan: RequestPlan,
        ctx: RequestContext,
        charge: TenantCharge | None,
    ) -> Started:
        try:
            # Image fetching and decoding count against the request's deadline too.
            async with asyncio.timeout(max(plan.deadline - time.time(), 0)):
                resolved = await self._resolve_messages(body, plan, ctx.audit)
        except TimeoutError as exc:
            raise errors.DeadlineExceeded(
                "The request's deadline passed while its images were fetched and decoded."
            ) from exc
        # The job id is ours, never the client's X-Request-Id: clients reuse ids, and a
        # job id keys the result stream and the engine's abort.
        job_id = uuid.uuid4().hex
        job = Job(
            id=job_id,
            model=body.model,
            lane=plan.lane,
            request=GenerationRequest(
                job_id, resolved.messages, plan.sampling, resolved.images, model=body.model
            ),
            deadline=plan.deadline,
            tenant=ctx.tenant,
        )
        events = await self.jobs.submit(job)
        return Started(job, plan, resolved, events, charge, self.jobs)

    async def _resolve_messages(
        self, body: ChatCompletionRequest, plan: RequestPlan, audit: AuditEvent | None
    ) -> ResolvedMessages:
        """Messages in template form, their images resolved concurrently: fetches are
        async I/O, decoding runs in threads, so the event loop stays free."""
        limit = self.settings.images.max_images_per_request
        check_image_count(plan.image_count, limit, param="messages")
        requests = [
            ImageRequest(
                ref.part.image_url.url,
                ref.part.image_url.dicom.to_options() if ref.part.image_url.dicom else None,
                ref.param,
            )
            for ref in plan.image_parts
        ]
        resolved = await resolve_images(self.metrics, [self.media.resolve(r) for r in requests])
        if audit is not None:
            for item in resolved:
                audit.images += len(item.images)
                if item.sop_instance_uid:
                    audit.note_sop_instance_uid(item.sop_instance_uid)
        return ResolvedMessages(
            messages=to_template_messages(body.messages, (len(r.images) for r in resolved)),
            images=[image for item in resolved for image in item.images],
            dicom=[item.info for item in resolved if item.info is not None],
            parts=resolved,
        )

    # answering

    async def _collect(self, started: Started, ctx: RequestContext) -> tuple[dict[str, Any], Usage]:
        job = started.job
        done = await collect(started.events, lambda: self.observe_ttft(started, ctx))
        logprobs = done.logprobs if started.plan.sampling.logprobs is not None else None
        body = completion(
            job.id,
            int(job.enqueued_at),
            job.model,
            done.text,
            done.finish,
            started.resolved.dicom,
            logprobs,
        )
        return body, done.finish.usage

    async def _stream(
        self,
        started: Started,
        first: list[JobEvent],
        include_usage: bool,
        audit: AuditEvent | None,
        response_span: Any | None,
    ) -> AsyncGenerator[str, None]:
        """One write per batch: when a stream falls behind, its pending tokens leave in
        one write instead of one per token. Once headers are sent, a failure travels
        as an error event before `[DONE]`."""
        job, dicom = started.job, started.resolved.dicom
        chunks = ChunkWriter(job.id, int(job.enqueued_at), job.model, include_usage)
        usage: Usage | None = None
        try:
            out = [chunks.role({"dicom": dicom} if dicom else None)]
            async for batch in relayed(first, started.events):
                for event in batch:
                    if isinstance(event, Delta):
                        out.append(chunks.content(event.text, event.logprobs))
                    elif isinstance(event, JobFailed):
                        error = event.to_exception()
                        self.metrics.rejections.labels(event.code).inc()
                        if audit is not None:  # the status stays 200: the outcome says it
                            audit.outcome = event.code
                        out += [chunks.error(error), DONE]
                    else:
                        usage = event.usage
                        out.append(chunks.finish(event.finish_reason))
                        if include_usage:
                            out.append(chunks.usage(event.usage.as_openai()))
                        out.append(DONE)
                yield "".join(out)
                out = []
        finally:
            tracing.end_span(response_span, completed=usage is not None)
            await started.finish(usage)  # before the end (the client left): cancels the job

    def observe_ttft(self, started: Started, ctx: RequestContext) -> None:
        """Time to first token, from the request's arrival, by model and lane."""
        self.metrics.time_to_first_token.labels(started.job.model, started.plan.lane.value).observe(
            time.perf_counter() - ctx.started
        )
