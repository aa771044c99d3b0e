"""Chat completions: validate, resolve images, admit, enqueue, and answer (JSON or SSE).

The router in `routes.py` is thin; all logic of the endpoint lives here and
raises `service.errors` only. Order matters for cost: cheap checks first, image
decoding (in threads) next, admission last, so a refused request costs little.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from service import errors
from service.api.chat_params import lane_of, sampling_of, timeout_of
from service.api.chunks import DONE, ChunkWriter
from service.api.disconnect import ClientWatch
from service.api.protocol import ChatCompletionRequest, ChatMessage, ImagePart
from service.api.request_limits import RequestLimits, check_shape
from service.api.tenancy import TenantCharge, TenantGate
from service.audit import AuditEvent
from service.config import Settings
from service.engines.base import (
    Delta,
    GenerationRequest,
    ImageInput,
    SamplingParams,
    Usage,
)
from service.media.resolve import ImageRequest, MediaResolver
from service.metrics import ServiceMetrics
from service.queue.base import Job, JobEvent, JobFailed, JobQueue, Restarted
from service.queue.lanes import Lane
from service.security.limits import TenantLimiter
from service.security.policy import Principal


@dataclass(frozen=True)
class RequestContext:
    """What the HTTP layer knows about a request besides its body."""

    request_id: str
    priority: str | None  # X-Priority header
    timeout: str | None  # X-Request-Timeout header, seconds
    started: float  # time.perf_counter() at arrival
    audit: AuditEvent | None = None  # filled in as the request is served
    principal: Principal | None = None  # the caller's key and tenant; None: auth off


@dataclass(frozen=True)
class ResolvedMessages:
    messages: list[dict[str, Any]]  # template form, one {"type": "image"} per image
    images: list[ImageInput]
    dicom: list[dict[str, Any]]  # extension: frames and window per DICOM image part


class ChatCompletions:
    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        metrics: ServiceMetrics,
        model_id: str,
        limiter: TenantLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.metrics = metrics
        self.model_id = model_id
        self.media = MediaResolver(settings.images, settings.fetch, settings.pacs_entries())
        self.tenants = TenantGate(limiter, metrics)
        self.limits = RequestLimits(
            settings.max_json_depth, settings.max_messages, settings.max_text_chars
        )

    async def aclose(self) -> None:
        await self.media.aclose()
        if self.tenants.limiter is not None:
            await self.tenants.limiter.close()

    async def create(
        self,
        body: ChatCompletionRequest,
        ctx: RequestContext,
        watch: ClientWatch,
    ) -> dict[str, Any] | AsyncGenerator[str, None]:
        """A completion dict, or for `stream=True` an iterator of SSE lines that
        starts only after the first token (so early errors keep their status)."""
        if body.model != self.model_id:
            raise errors.ModelNotFound(
                # The requested name is not echoed: clients may put anything there.
                f"The requested model does not exist; this server serves {self.model_id!r}.",
                param="model",
            )
        check_shape(body, self.limits)
        lane = lane_of(body, ctx.priority, self.settings.default_priority)
        timeout = timeout_of(ctx.timeout, self.settings)
        deadline = time.time() + timeout
        sampling = sampling_of(body, self.settings)
        image_parts = self._image_parts(body.messages)
        self.tenants.check(
            ctx.principal,
            body.model,
            lane,
            sampling.max_tokens,
            sum(part.image_url.image_count() for _, _, part in image_parts),
        )
        charge = await self.tenants.admit(ctx.principal, sampling.max_tokens, timeout)
        try:
            return await self._admitted(body, ctx, watch, lane, deadline, sampling, charge)
        except BaseException:
            if charge is not None:
                await charge.release(None)
            raise

    async def _admitted(
        self,
        body: ChatCompletionRequest,
        ctx: RequestContext,
        watch: ClientWatch,
        lane: Lane,
        deadline: float,
        sampling: SamplingParams,
        charge: TenantCharge | None,
    ) -> dict[str, Any] | AsyncGenerator[str, None]:
        """The part after the tenant's charge: whoever ends the request releases it."""
        try:
            # Image fetching and decoding count against the request's deadline too.
            async with asyncio.timeout(max(deadline - time.time(), 0)):
                resolved = await self._resolve_messages(body.messages, ctx.audit)
        except TimeoutError as exc:
            raise errors.DeadlineExceeded(
                "The request's deadline passed while its images were fetched and decoded."
            ) from exc
        # The job id is ours, never the client's X-Request-Id: clients reuse ids, and a
        # job id keys the result stream and the engine's abort.
        job_id = uuid.uuid4().hex
        job = Job(
            id=job_id,
            model=self.model_id,
            lane=lane,
            request=GenerationRequest(job_id, resolved.messages, sampling, resolved.images),
            deadline=deadline,
        )
        try:
            await self.queue.submit(job)
        except errors.Overloaded as exc:
            self.metrics.rejections.labels(exc.code or "overloaded").inc()
            raise
        batches = self.queue.events(job.id)
        if not body.stream:
            try:
                with watch.guard():
                    answer, usage = await self._collect(job, batches, lane, ctx)
                if resolved.dicom:
                    answer["dicom"] = resolved.dicom
                if charge is not None:
                    await charge.release(usage)
                return answer
            except BaseException:
                await self.queue.cancel(job.id)  # gone, failed or late: stop the work
                raise
            finally:
                await batches.aclose()
        try:
            with watch.guard():
                first = await _first_batch(batches)
        except BaseException:
            await self.queue.cancel(job.id)
            await batches.aclose()
            raise
        self._observe_ttft(lane, ctx)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # it owns job and batches now
        return self._stream(job, first, batches, include_usage, resolved.dicom, ctx.audit, charge)

    @staticmethod
    def _image_parts(messages: list[ChatMessage]) -> list[tuple[int, int, ImagePart]]:
        return [
            (i, j, part)
            for i, message in enumerate(messages)
            if isinstance(message.content, list)
            for j, part in enumerate(message.content)
            if isinstance(part, ImagePart)
        ]

    async def _resolve_messages(
        self, messages: list[ChatMessage], audit: AuditEvent | None
    ) -> ResolvedMessages:
        """Messages in template form, their images resolved concurrently: fetches are
        async I/O, decoding runs in threads, so the event loop stays free."""
        limits = self.settings.images
        requests: list[ImageRequest] = []
        counted = 0
        for i, j, part in self._image_parts(messages):
            options = part.image_url.dicom
            requests.append(
                ImageRequest(
                    part.image_url.url,
                    options.to_options() if options else None,
                    f"messages[{i}].content[{j}]",
                )
            )
            counted += part.image_url.image_count()
        if counted > limits.max_images_per_request:
            raise errors.InvalidRequest(
                f"The request has {counted} images (DICOM frames count one each); the limit "
                f"is {limits.max_images_per_request}.",
                param="messages",
                code="too_many_images",
            )
        started = time.perf_counter()
        try:
            resolved = await asyncio.gather(*(self.media.resolve(r) for r in requests))
        except errors.ServiceError as exc:
            self.metrics.rejections.labels(exc.code or type(exc).__name__).inc()
            raise
        if requests:
            self.metrics.image_preprocess.observe(time.perf_counter() - started)
        out: list[dict[str, Any]] = []
        next_image = iter(resolved)
        for message in messages:
            content = message.content
            if content is None or isinstance(content, str):
                parts = [{"type": "text", "text": content or ""}]
            else:
                parts = []
                for part in content:
                    if isinstance(part, ImagePart):
                        parts += [{"type": "image"}] * len(next(next_image).images)
                    else:
                        parts.append({"type": "text", "text": part.text})
            out.append({"role": message.role, "content": parts})
        if audit is not None:
            for item in resolved:
                audit.images += len(item.images)
                if item.sop_instance_uid:
                    audit.note_sop_instance_uid(item.sop_instance_uid)
        return ResolvedMessages(
            messages=out,
            images=[image for item in resolved for image in item.images],
            dicom=[item.info for item in resolved if item.info is not None],
        )

    # answering

    async def _collect(
        self,
        job: Job,
        batches: AsyncGenerator[list[JobEvent], None],
        lane: Lane,
        ctx: RequestContext,
    ) -> tuple[dict[str, Any], Usage]:
        pieces: list[str] = []
        async for batch in batches:
            if not pieces:
                self._observe_ttft(lane, ctx)
            for event in batch:
                if isinstance(event, Delta):
                    pieces.append(event.text)
                elif isinstance(event, Restarted):
                    pieces.clear()  # another worker starts over: a transparent retry
                elif isinstance(event, JobFailed):
                    raise event.to_exception()
                else:
                    return {
                        "id": f"chatcmpl-{job.id}",
                        "object": "chat.completion",
                        "created": int(job.enqueued_at),
                        "model": self.model_id,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "".join(pieces)},
                                "finish_reason": event.finish_reason,
                                "logprobs": None,
                            }
                        ],
                        "usage": event.usage.as_openai(),
                    }, event.usage
        raise errors.EngineError("The response ended without finishing.")

    async def _stream(
        self,
        job: Job,
        first: list[JobEvent],
        batches: AsyncGenerator[list[JobEvent], None],
        include_usage: bool,
        dicom: list[dict[str, Any]],
        audit: AuditEvent | None,
        charge: TenantCharge | None,
    ) -> AsyncGenerator[str, None]:
        """One write per batch: when a stream falls behind, its pending tokens leave in
        one write instead of one per token. Once headers are sent, a failure travels
        as an error event before `[DONE]`."""
        chunks = ChunkWriter(
            f"chatcmpl-{job.id}", int(job.enqueued_at), self.model_id, include_usage
        )
        usage: Usage | None = None
        try:
            out = [chunks.role({"dicom": dicom} if dicom else None)]
            batch = first
            sent_text = False
            while True:
                for event in batch:
                    if isinstance(event, Delta):
                        out.append(chunks.content(event.text))
                        sent_text = True
                        continue
                    if isinstance(event, Restarted):
                        if not sent_text:
                            continue  # nothing shown yet: the new attempt simply continues
                        # Text already went out; splicing a second attempt would garble it.
                        event = JobFailed(
                            "NotReady",
                            "The worker running this request was "
                            "lost after it started answering; retry the request.",
                            code="worker_lost",
                        )
                    if isinstance(event, JobFailed):
                        error = event.to_exception()
                        self.metrics.rejections.labels(error.code or event.error).inc()
                        if audit is not None:  # the status stays 200: the outcome says it
                            audit.outcome = error.code or event.error
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
                    batch = [JobFailed("EngineError", "The response ended without finishing.")]
        finally:
            # Closing the event stream before its end (the client left) cancels the job.
            await batches.aclose()
            if charge is not None:
                await charge.release(usage)

    def _observe_ttft(self, lane: Lane, ctx: RequestContext) -> None:
        self.metrics.time_to_first_token.labels(self.model_id, lane.value).observe(
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
