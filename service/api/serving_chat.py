"""Chat completions: validate, resolve images, admit, enqueue, and answer (JSON or SSE).

The router in `routes.py` is thin; all logic of the endpoint lives here and
raises `service.errors` only. Order matters for cost: cheap checks first, image
decoding (in threads) next, admission last, so a refused request costs little.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service import errors
from service.api.disconnect import race_disconnect
from service.api.protocol import ChatCompletionRequest, ChatMessage, ImagePart
from service.config import Settings
from service.engines.base import (
    Delta,
    Finish,
    GenerationRequest,
    ImageInput,
    SamplingParams,
)
from service.media.images import image_from_data_url
from service.metrics import ServiceMetrics
from service.queue.base import Job, JobFailed, JobQueue
from service.queue.lanes import Lane


@dataclass(frozen=True)
class RequestContext:
    """What the HTTP layer knows about a request besides its body."""

    request_id: str
    priority: str | None  # X-Priority header
    timeout: str | None  # X-Request-Timeout header, seconds
    started: float  # time.perf_counter() at arrival


class ChatCompletions:
    def __init__(
        self, settings: Settings, queue: JobQueue, metrics: ServiceMetrics, model_id: str
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.metrics = metrics
        self.model_id = model_id

    async def create(
        self,
        body: ChatCompletionRequest,
        ctx: RequestContext,
        disconnected: Callable[[], Awaitable[None]],
    ) -> dict[str, Any] | AsyncIterator[str]:
        """A completion dict, or for `stream=True` an iterator of SSE lines that
        starts only after the first token (so early errors keep their status)."""
        if body.model != self.model_id:
            raise errors.ModelNotFound(
                # The requested name is not echoed: clients may put anything there.
                f"The requested model does not exist; this server serves {self.model_id!r}.",
                param="model",
            )
        lane = self._lane(body, ctx)
        deadline = time.time() + self._timeout(ctx)
        sampling = self._sampling(body)
        messages, images = await self._resolve_messages(body.messages)
        job = Job(
            id=ctx.request_id,
            model=self.model_id,
            lane=lane,
            request=GenerationRequest(ctx.request_id, messages, sampling, images),
            deadline=deadline,
        )
        try:
            await self.queue.submit(job)
        except errors.Overloaded as exc:
            self.metrics.rejections.labels(exc.code or "overloaded").inc()
            raise
        events = _bounded(self.queue.events(job.id), job)
        try:
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                first = await race_disconnect(_first_event(events), disconnected)
                self._observe_ttft(first, lane, ctx)
                return self._stream(job, first, events, include_usage, ctx)
            return await race_disconnect(self._collect(job, events, lane, ctx), disconnected)
        except BaseException:
            await self.queue.cancel(job.id)
            raise

    # validation

    def _lane(self, body: ChatCompletionRequest, ctx: RequestContext) -> Lane:
        if body.priority is not None:
            return body.priority
        if ctx.priority is None:
            return self.settings.default_priority
        try:
            return Lane(ctx.priority.strip().lower())
        except ValueError as exc:
            raise errors.InvalidRequest(
                "X-Priority must be one of: " + ", ".join(lane.value for lane in Lane) + ".",
                param="X-Priority",
                code="invalid_priority",
            ) from exc

    def _timeout(self, ctx: RequestContext) -> float:
        if ctx.timeout is None:
            return self.settings.request_timeout
        try:
            seconds = float(ctx.timeout)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= self.settings.max_request_timeout:
            raise errors.InvalidRequest(
                "X-Request-Timeout must be a number of seconds in (0, "
                f"{self.settings.max_request_timeout:g}].",
                param="X-Request-Timeout",
                code="invalid_timeout",
            )
        return seconds

    def _sampling(self, body: ChatCompletionRequest) -> SamplingParams:
        max_tokens = body.requested_max_tokens() or self.settings.max_tokens_default
        if max_tokens > self.settings.max_tokens_limit:
            raise errors.InvalidRequest(
                f"max_tokens is {max_tokens}; the limit is {self.settings.max_tokens_limit}.",
                param="max_tokens",
                code="max_tokens_too_large",
            )
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=body.stop_sequences(),
        )

    async def _resolve_messages(
        self, messages: list[ChatMessage]
    ) -> tuple[list[dict[str, Any]], list[ImageInput]]:
        """Messages in template form, and their images decoded concurrently off the loop."""
        limits = self.settings.images
        out: list[dict[str, Any]] = []
        image_urls: list[tuple[str, str]] = []
        for i, message in enumerate(messages):
            content = message.content
            if content is None or isinstance(content, str):
                parts = [{"type": "text", "text": content or ""}]
            else:
                parts = []
                for j, part in enumerate(content):
                    if isinstance(part, ImagePart):
                        image_urls.append((part.image_url.url, f"messages[{i}].content[{j}]"))
                        parts.append({"type": "image"})
                    else:
                        parts.append({"type": "text", "text": part.text})
            out.append({"role": message.role, "content": parts})
        if len(image_urls) > limits.max_images_per_request:
            raise errors.InvalidRequest(
                f"The request has {len(image_urls)} images; the limit is "
                f"{limits.max_images_per_request}.",
                param="messages",
                code="too_many_images",
            )
        if not image_urls:
            return out, []
        started = time.perf_counter()
        try:
            images = await asyncio.gather(
                *(
                    asyncio.to_thread(image_from_data_url, url, limits, param)
                    for url, param in image_urls
                )
            )
        except errors.ServiceError as exc:
            self.metrics.rejections.labels(exc.code or type(exc).__name__).inc()
            raise
        self.metrics.image_preprocess.observe(time.perf_counter() - started)
        return out, list(images)

    # answering

    async def _collect(
        self, job: Job, events: AsyncIterator[Delta | Finish], lane: Lane, ctx: RequestContext
    ) -> dict[str, Any]:
        pieces: list[str] = []
        async for event in events:
            if isinstance(event, Delta):
                if not pieces:
                    self._observe_ttft(event, lane, ctx)
                pieces.append(event.text)
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
                }
        raise errors.EngineError("The response ended without finishing.")

    async def _stream(
        self,
        job: Job,
        first: Delta | Finish,
        events: AsyncIterator[Delta | Finish],
        include_usage: bool,
        ctx: RequestContext,
    ) -> AsyncIterator[str]:
        chunk = ChunkWriter(
            f"chatcmpl-{job.id}", int(job.enqueued_at), self.model_id, include_usage
        )
        try:
            yield chunk.delta({"role": "assistant", "content": ""})
            event: Delta | Finish = first
            while True:
                if isinstance(event, Delta):
                    yield chunk.delta({"content": event.text})
                else:
                    yield chunk.finish(event.finish_reason)
                    if include_usage:
                        yield chunk.usage(event.usage.as_openai())
                    break
                event = await anext(events)
        except errors.ServiceError as exc:
            # Headers are sent: the error travels as an event, then the stream ends.
            self.metrics.rejections.labels(exc.code or type(exc).__name__).inc()
            yield sse({"error": errors.to_error_response(exc).body["error"]})
        except StopAsyncIteration:
            yield sse(
                {
                    "error": {
                        "message": "The response ended without finishing.",
                        "type": "server_error",
                        "param": None,
                        "code": "engine_error",
                    }
                }
            )
        finally:
            # Client gone (the task is cancelled) or done: either way free the job.
            await self.queue.cancel(job.id)
        yield "data: [DONE]\n\n"

    def _observe_ttft(self, event: Delta | Finish, lane: Lane, ctx: RequestContext) -> None:
        self.metrics.time_to_first_token.labels(self.model_id, lane.value).observe(
            time.perf_counter() - ctx.started
        )


class ChunkWriter:
    """Serializes `chat.completion.chunk` events; plain dicts, as they are on the hot path."""

    def __init__(self, id_: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {
            "id": id_,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self.include_usage = include_usage

    def delta(self, delta: dict[str, str]) -> str:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}])

    def finish(self, finish_reason: str) -> str:
        return self._chunk(
            [{"index": 0, "delta": {}, "finish_reason": finish_reason, "logprobs": None}]
        )

    def usage(self, usage: dict[str, int]) -> str:
        return self._chunk([], usage)

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {**self.base, "choices": choices}
        if self.include_usage:
            body["usage"] = usage
        return sse(body)


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _bounded(events: AsyncIterator[Any], job: Job) -> AsyncIterator[Delta | Finish]:
    """The job's events until the terminal one, failures raised as errors, the wait
    bounded by the job's deadline (504)."""
    iterator = aiter(events)
    while True:
        try:
            async with asyncio.timeout(job.remaining()):  # a timer, not a task, per event
                event = await anext(iterator)
        except TimeoutError as exc:
            raise errors.DeadlineExceeded(
                "The request did not complete before its deadline."
            ) from exc
        except StopAsyncIteration:
            return
        if isinstance(event, JobFailed):
            raise event.to_exception()
        yield event
        if isinstance(event, Finish):
            return


async def _first_event(events: AsyncIterator[Delta | Finish]) -> Delta | Finish:
    try:
        return await anext(events)
    except StopAsyncIteration as exc:
        raise errors.EngineError("The response ended without output.") from exc
