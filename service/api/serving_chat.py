"""Chat completions, the orchestration: plan, admit the tenant, resolve images,
enqueue, and answer (JSON or SSE).

The router in `routes.py` is thin; the request's plan is `request_plan`, the
message translation `core.chat_format`, the bodies `responses`. Everything
raises `service.errors` only. Order matters for cost: cheap checks first, image
decoding (in threads) next, admission last, so a refused request costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
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
from service.core.jobs import Job, JobEvent, JobFailed, Restarted
from service.core.lanes import Lane
from service.media.resolve import ImageRequest, MediaResolver
from service.metrics import ServiceMetrics
from service.serving.context import RequestContext
from service.serving.images import resolve_images
from service.serving.jobs import Events, JobPath, collect
from service.serving.tenancy import TenantCharge, TenantGate


@dataclass(frozen=True)
class ResolvedMessages:
    messages: list[dict[str, Any]]  # template form, one {"type": "image"} per image
    images: list[ImageInput]
    dicom: list[dict[str, Any]]  # extension: frames and window per DICOM image part


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
            return await self._admitted(body, plan, ctx, watch, charge)
        except BaseException:
            if charge is not None:
                await charge.release(None)
            raise

    async def _admitted(
        self,
        body: ChatCompletionRequest,
        plan: RequestPlan,
        ctx: RequestContext,
        watch: ClientWatch,
        charge: TenantCharge | None,
    ) -> dict[str, Any] | AsyncGenerator[str, None]:
        """The part after the tenant's charge: whoever ends the request releases it."""
        lane = plan.lane
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
            lane=lane,
            request=GenerationRequest(
                job_id, resolved.messages, plan.sampling, resolved.images, model=body.model
            ),
            deadline=plan.deadline,
            tenant=ctx.principal.tenant if ctx.principal is not None else None,
        )
        batches = await self.jobs.submit(job)
        if not body.stream:
            try:
                response_span = tracing.start_span("response", {"gmaivl.stream": False})
                try:
                    with watch.guard():
                        answer, usage = await self._collect(
                            job,
                            batches,
                            lane,
                            ctx,
                            resolved.dicom,
                            plan.sampling.logprobs is not None,
                        )
                finally:
                    tracing.end_span(response_span)
                if charge is not None:
                    await charge.release(usage)
                return answer
            except BaseException:
                await self.jobs.cancel(job.id)  # gone, failed or late: stop the work
                raise
            finally:
                await batches.aclose()
        response_span = tracing.start_span("response", {"gmaivl.stream": True})
        try:
            with watch.guard():
                first = await _first_batch(batches)
        except BaseException:
            tracing.end_span(response_span)
            await self.jobs.cancel(job.id)
            await batches.aclose()
            raise
        self._observe_ttft(job.model, lane, ctx)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # it owns job and batches now
        return self._stream(
            job, first, batches, include_usage, resolved.dicom, ctx.audit, charge, response_span
        )

    async def _resolve_messages(
        self, body: ChatCompletionRequest, plan: RequestPlan, audit: AuditEvent | None
    ) -> ResolvedMessages:
        """Messages in template form, their images resolved concurrently: fetches are
        async I/O, decoding runs in threads, so the event loop stays free."""
        limits = self.settings.images
        if plan.image_count > limits.max_images_per_request:
            raise errors.InvalidRequest(
                f"The request has {plan.image_count} images (DICOM frames count one each); "
                f"the limit is {limits.max_images_per_request}.",
                param="messages",
                code="too_many_images",
            )
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
        )

    # answering

    async def _collect(
        self,
        job: Job,
        batches: Events,
        lane: Lane,
        ctx: RequestContext,
        dicom: list[dict[str, Any]],
        want_logprobs: bool = False,
    ) -> tuple[dict[str, Any], Usage]:
        done = await collect(batches, lambda: self._observe_ttft(job.model, lane, ctx))
        logprobs = done.logprobs if want_logprobs else None
        body = completion(
            job.id, int(job.enqueued_at), job.model, done.text, done.finish, dicom, logprobs
        )
        return body, done.finish.usage

    async def _stream(
        self,
        job: Job,
        first: list[JobEvent],
        batches: Events,
        include_usage: bool,
        dicom: list[dict[str, Any]],
        audit: AuditEvent | None,
        charge: TenantCharge | None,
        response_span: Any | None,
    ) -> AsyncGenerator[str, None]:
        """One write per batch: when a stream falls behind, its pending tokens leave in
        one write instead of one per token. Once headers are sent, a failure travels
        as an error event before `[DONE]`."""
        chunks = ChunkWriter(job.id, int(job.enqueued_at), job.model, include_usage)
        usage: Usage | None = None
        try:
            out = [chunks.role({"dicom": dicom} if dicom else None)]
            batch = first
            sent_text = False
            while True:
                for event in batch:
                    if isinstance(event, Delta):
                        out.append(chunks.content(event.text, event.logprobs))
                        sent_text = True
                        continue
                    if isinstance(event, Restarted):
                        if not sent_text:
                            continue  # nothing shown yet: the new attempt simply continues
                        # Text already went out; splicing a second attempt would garble it.
                        event = JobFailed(
                            "worker_lost",
                            "The worker running this request was "
                            "lost after it started answering; retry the request.",
                        )
                    if isinstance(event, JobFailed):
                        error = event.to_exception()
                        self.metrics.rejections.labels(event.code).inc()
                        if audit is not None:  # the status stays 200: the outcome says it
                            audit.outcome = event.code
                        out.append(chunks.error(error))
                    else:
                        usage = event.usage
                        out.append(chunks.finish(event.finish_reason))
                        if include_usage:
                            out.append(chunks.usage(event.usage.as_openai()))
                    out.append(DONE)
                    yield "".join(out)
                    return
                yield "".join(out)
                out = []
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    batch = [JobFailed("engine_error", "The response ended without finishing.")]
        finally:
            # Closing the event stream before its end (the client left) cancels the job.
            await batches.aclose()
            tracing.end_span(response_span, completed=usage is not None)
            if charge is not None:
                await charge.release(usage)

    def _observe_ttft(self, model: str, lane: Lane, ctx: RequestContext) -> None:
        self.metrics.time_to_first_token.labels(model, lane.value).observe(
            time.perf_counter() - ctx.started
        )


async def _first_batch(batches: AsyncIterator[list[JobEvent]]) -> list[JobEvent]:
    """The first batch; a failure before any output is raised, so it keeps its status."""
    try:
        batch = await anext(batches)
    except StopAsyncIteration as exc:
        raise errors.EngineError("The response ended without output.") from exc
    if isinstance(batch[0], JobFailed):
        raise batch[0].to_exception()
    return batch
