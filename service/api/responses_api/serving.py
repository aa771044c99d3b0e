"""The Responses API, the orchestration: a Responses request becomes a chat request
(`input.to_chat_input`) that goes through chat's own planner, tenant gate, image
resolution and job path (`ChatCompletions.start`), and its events are rendered as
a `response` object or as semantic SSE events (`bodies`).

Stored responses (`store`, default true) live in a `ResponseStore`; a
`previous_response_id` puts that response's conversation (its inputs and answer,
and theirs, oldest first) before the new input. `background: true` answers
`queued` at once and generates in a task of this gateway; in Redis mode the
gateway renews it, and when a gateway stops renewing, another one takes the
response over and generates it again from what was stored. An operator can turn
storage off (`GMAIVL_STORE_RESPONSES=false`): `store` then reads false in every
response, and `previous_response_id` and `background` are 400.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service import errors, tracing
from service.api.disconnect import ClientWatch
from service.api.protocol import ChatCompletionRequest, JSONSchema, ResponseFormat
from service.api.responses_api.bodies import (
    EventWriter,
    echoed_settings,
    error_object,
    response_object,
)
from service.api.responses_api.input import (
    ChatInput,
    KeptImage,
    kept_items,
    rename_param,
    to_chat_input,
)
from service.api.responses_api.parameters import LOGPROBS, check_parameters
from service.api.responses_api.protocol import InputImage, InputMessage, ResponseCreateRequest
from service.api.serving_chat import ChatCompletions, Started
from service.config import Settings
from service.core.generation import Delta, Finish, ImageInput, TokenLogprobs
from service.core.jobs import JobFailed
from service.core.lanes import Lane
from service.media.images import png_data_url
from service.metrics import ServiceMetrics
from service.responses.store import ResponseStore, StoredResponse, Viewer
from service.serving.context import RequestContext
from service.serving.jobs import collect, first_batch, relayed
from service.serving.leases import stop, sweep

log = logging.getLogger("gmaivl.responses")

T = TypeVar("T")
# How a chat error is told in Responses terms (its `param`, the conversation), per request.
Renaming = Callable[[errors.ServiceError], errors.ServiceError]
MAX_CHAIN = 256  # previous_response_id hops followed at most (each hop is a stored response)


@dataclass
class Running:
    """One response being generated: its ids, echoed settings and job."""

    id: str
    item_id: str
    created_at: int
    settings: dict[str, Any]
    store: bool
    logprobs: bool
    viewer: Viewer  # who creates it, and so who may see it
    started: Started
    input_items: list[dict[str, Any]] = field(default_factory=list)

    def body(
        self,
        status: str,
        text: str | None = None,
        finish: Finish | None = None,
        logprobs: list[TokenLogprobs] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return response_object(
            self.id,
            self.created_at,
            self.settings,
            status,
            item_id=self.item_id,
            text=text,
            usage=finish.usage if finish is not None else None,
            error=error,
            logprobs=logprobs if self.logprobs else None,
            dicom=self.started.resolved.dicom,
        )


def status_of(finish: Finish) -> str:
    return "incomplete" if finish.finish_reason == "length" else "completed"


@dataclass(eq=False)
class ResponsesService:
    settings: Settings
    chat: ChatCompletions
    store: ResponseStore
    metrics: ServiceMetrics
    # this gateway, as the owner of its background responses
    owner: str = field(default_factory=lambda: uuid.uuid4().hex, init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, init=False)

    # creating

    async def create(
        self, body: ResponseCreateRequest, ctx: RequestContext, watch: ClientWatch
    ) -> dict[str, Any] | AsyncGenerator[str, None]:
        """A response dict (completed, incomplete, or queued in the background), or
        for `stream` an iterator of SSE events that starts after the first token."""
        store = self._check(body)
        viewer = viewer_of(ctx)
        history = await self._history(body.previous_response_id, viewer)
        chat_input = to_chat_input(body.instructions, history, body.input_items())
        chat_body = self._chat_request(body, chat_input, ctx)
        rename = functools.partial(_renamed, chat_input=chat_input, history=history)
        try:
            started = await self.chat.start(chat_body, ctx)
        except errors.ServiceError as exc:
            raise rename(exc) from None
        running = Running(
            # the job's id is a fresh uuid4 already (never the client's): one random draw
            id="resp_" + started.job.id,
            item_id="msg_" + started.job.id,
            created_at=int(time.time()),
            settings=echoed_settings(body, store),
            store=store,
            logprobs=LOGPROBS in (body.include or ()),
            viewer=viewer,
            started=started,
        )
        try:
            if store:
                running.input_items = await self._kept(body, started)
            if body.background:
                return await self._background(running, body)
        except BaseException:
            await started.abandon()
            raise
        if body.stream:
            return await self._open_stream(running, ctx, watch, rename)
        return await self._answer(running, ctx, watch, rename)

    def _check(self, body: ResponseCreateRequest) -> bool:
        """Refusals that need no work, and whether the response is stored."""
        check_parameters(body)
        if not self.settings.store_responses:
            for name in ("previous_response_id", "background"):
                if getattr(body, name):
                    raise errors.InvalidRequest(
                        f"{name} needs stored responses, which this deployment turns off "
                        "(responses are not kept: store is always false).",
                        param=name,
                        code="response_storage_disabled",
                    )
            return False
        if body.background and body.store is False:
            raise errors.InvalidRequest(
                "background needs store: true.", param="background", code="invalid_request"
            )
        if body.background and body.stream:
            raise errors.InvalidRequest(
                "background responses are polled (GET /v1/responses/{id}), not streamed.",
                param="stream",
                code="unsupported_parameter",
            )
        return body.store is not False

    async def _history(self, previous: str | None, viewer: Viewer) -> list[dict[str, Any]]:
        """The conversation before `previous` and `previous` itself: inputs and answers."""
        chain: list[list[dict[str, Any]]] = []
        response_id = previous
        while response_id is not None:
            if len(chain) >= MAX_CHAIN:
                raise errors.InvalidRequest(
                    f"The conversation is longer than {MAX_CHAIN} responses.",
                    param="previous_response_id",
                    code="context_length_exceeded",
                )
            record = await self.store.get(response_id, viewer)
            items = await self.store.get_input(response_id, viewer) if record else None
            if record is None or items is None:
                raise _not_found(param="previous_response_id")
            if record.status not in ("completed", "incomplete"):
                raise errors.InvalidRequest(
                    f"The previous response is {record.status}; only a finished one continues.",
                    param="previous_response_id",
                    code="invalid_request",
                )
            chain.append(items + list(record.response.get("output", [])))
            response_id = record.response.get("previous_response_id")
        return [item for turn in reversed(chain) for item in turn]

    def _chat_request(
        self, body: ResponseCreateRequest, chat_input: ChatInput, ctx: RequestContext
    ) -> ChatCompletionRequest:
        want_logprobs = LOGPROBS in (body.include or ())
        priority = body.priority
        if body.background and priority is None and ctx.priority is None:
            priority = Lane.batch  # background work waits behind interactive work
        # every field below was validated by the Responses model, with chat's bounds
        return ChatCompletionRequest.model_construct(
            model=body.model,
            messages=chat_input.messages,
            max_completion_tokens=body.max_output_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stream=bool(body.stream),
            logprobs=want_logprobs or None,
            top_logprobs=(body.top_logprobs or 0) if want_logprobs else None,
            user=body.user,
            response_format=_response_format(body),
            priority=priority,
        )

    async def _kept(self, body: ResponseCreateRequest, started: Started) -> list[dict[str, Any]]:
        """The input items to store; `data:` images as the pixels the model got (PNG)."""
        items = body.input_items()
        own = sum(
            isinstance(part, InputImage)
            for item in items
            if isinstance(item, InputMessage) and not isinstance(item.content, str)
            for part in item.content
        )
        parts = started.plan.image_parts[len(started.plan.image_parts) - own :]
        resolved = started.resolved.parts[len(started.resolved.parts) - own :]
        kept = []
        for ref, image in zip(parts, resolved, strict=True):
            url = ref.part.image_url.url
            if url.startswith("data:"):
                pngs = await asyncio.to_thread(_pngs, image.images)
                kept.append(KeptImage(pngs, image.info))
            else:
                kept.append(KeptImage([url], None))
        return kept_items(items, kept)

    # answering in the foreground

    async def _answer(
        self,
        running: Running,
        ctx: RequestContext,
        watch: ClientWatch,
        rename: Renaming,
    ) -> dict[str, Any]:
        started = running.started
        span = tracing.start_span("response", {"gmaivl.stream": False})
        try:
            work = collect(started.events, lambda: self.chat.observe_ttft(started, ctx))
            done = await self._guarded(started, watch, work, rename)
        finally:
            tracing.end_span(span)
        await started.finish(done.finish.usage)
        answer = running.body(status_of(done.finish), done.text, done.finish, done.logprobs)
        if running.store:
            await self._save(running, answer)
        return answer

    async def _open_stream(
        self,
        running: Running,
        ctx: RequestContext,
        watch: ClientWatch,
        rename: Renaming,
    ) -> AsyncGenerator[str, None]:
        started = running.started
        span = tracing.start_span("response", {"gmaivl.stream": True})
        try:
            first = await self._guarded(started, watch, first_batch(started.events), rename)
        except BaseException:
            tracing.end_span(span)
            raise
        self.chat.observe_ttft(started, ctx)
        return self._stream(running, first, ctx, span)

    async def _guarded(
        self,
        started: Started,
        watch: ClientWatch,
        work: Awaitable[T],
        rename: Renaming,
    ) -> T:
        """`work` until the client leaves; any failure abandons the job (an error keeps
        its status, its `param` renamed to the Responses field)."""
        try:
            with watch.guard():
                return await work
        except errors.ServiceError as exc:
            await started.abandon()
            raise rename(exc) from None
        except BaseException:
            await started.abandon()
            raise

    async def _stream(
        self, running: Running, first: list[Any], ctx: RequestContext, span: Any
    ) -> AsyncGenerator[str, None]:
        """One write per batch of events; a failure after the first token is an `error`
        event, then `response.failed`."""
        started = running.started
        writer = EventWriter(
            running.id,
            running.item_id,
            running.created_at,
            running.settings,
            started.resolved.dicom,
        )
        opening = writer.response("in_progress")
        out = [
            writer.lifecycle("response.created", opening),
            writer.lifecycle("response.in_progress", opening),
            writer.opening(),
        ]
        pieces: list[str] = []
        logprobs: list[TokenLogprobs] = []
        usage = None
        try:
            async for batch in relayed(first, started.events):
                for event in batch:
                    if isinstance(event, Delta):
                        pieces.append(event.text)
                        if running.logprobs:
                            logprobs.extend(event.logprobs)
                            out.append(writer.delta(event.text, event.logprobs))
                        else:
                            out.append(writer.delta(event.text))
                    elif isinstance(event, JobFailed):
                        error = event.to_exception()
                        self.metrics.rejections.labels(event.code).inc()
                        if ctx.audit is not None:  # the status stays 200: the outcome says it
                            ctx.audit.outcome = event.code
                        out.append(writer.error(error))
                        failed = writer.response("failed", error=error_object(error))
                        out.append(writer.lifecycle("response.failed", failed))
                    else:
                        usage = event.usage
                        text = "".join(pieces)
                        status = status_of(event)
                        kept = logprobs if running.logprobs else None
                        closing, output = writer.closing(text, status, kept)
                        answer = writer.response(status, output, event.usage)
                        out += [closing, writer.lifecycle(f"response.{status}", answer)]
                        if running.store:
                            await self._save(running, running.body(status, text, event, logprobs))
                yield "".join(out)
                out = []
        finally:
            tracing.end_span(span, completed=usage is not None)
            await started.finish(usage)  # before the end (the client left): cancels the job

    async def _save(self, running: Running, answer: dict[str, Any]) -> None:
        await self.store.create(
            StoredResponse(
                id=running.id,
                response=answer,
                tenant=running.viewer.tenant,
                user=running.viewer.user,
                input_items=running.input_items,
            )
        )

    # background

    async def _background(self, running: Running, body: ResponseCreateRequest) -> dict[str, Any]:
        queued = running.body("queued")
        request = body.model_dump(mode="json", exclude={"input", "background", "stream"})
        record = StoredResponse(
            id=running.id,
            response=queued,
            tenant=running.viewer.tenant,
            user=running.viewer.user,
            input_items=running.input_items,
            run={
                "request": request,
                "item_id": running.item_id,
                "lane": running.started.plan.lane.value,
                "timeout": running.started.plan.timeout,
                "job_id": running.started.job.id,
            },
            owner=self.owner,
        )
        await self.store.create(record)
        self._start(record, running)
        return queued

    def _start(self, record: StoredResponse, running: Running) -> None:
        task = asyncio.create_task(self._generate(record, running))
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))

    async def _generate(self, record: StoredResponse, running: Running) -> None:
        started = running.started
        usage = None
        try:
            record.response = running.body("in_progress")
            if not await self.store.update(record):
                return  # cancelled before it started
            try:
                done = await collect(started.events)
            except errors.ServiceError as exc:
                record.response = running.body("failed", error=error_object(exc))
            except Exception as exc:  # a bug must not leave the response in progress forever
                log.error("response %s failed:\n%s", record.id, errors.redacted_traceback(exc))
                failed = errors.ServiceError("The response failed.")
                record.response = running.body("failed", error=error_object(failed))
            else:
                usage = done.finish.usage
                status = status_of(done.finish)
                record.response = running.body(status, done.text, done.finish, done.logprobs)
            await self.store.update(record)  # refused when it was cancelled meanwhile
        finally:
            await started.finish(usage)

    async def cancel(self, response_id: str, viewer: Viewer) -> dict[str, Any]:
        record = await self.store.get(response_id, viewer)
        if record is None:
            raise _not_found()
        if record.run is None:
            raise errors.InvalidRequest(
                "Only background responses can be cancelled.",
                param="response_id",
                code="invalid_request",
            )
        if record.terminal:
            return record.response
        record.response = {**record.response, "status": "cancelled"}
        if await self.store.update(record):
            task = self._tasks.get(response_id)
            if task is not None:
                task.cancel()
            else:  # generating on another gateway (Redis mode): stop its job there
                await self.chat.jobs.cancel(record.run["job_id"])
            return record.response
        current = await self.store.get(response_id, viewer)
        return current.response if current is not None else record.response

    # reading

    async def get(self, response_id: str, viewer: Viewer) -> dict[str, Any]:
        record = await self.store.get(response_id, viewer)
        if record is None:
            raise _not_found()
        return record.response

    async def delete(self, response_id: str, viewer: Viewer) -> dict[str, Any]:
        if not await self.store.delete(response_id, viewer):
            raise _not_found()
        task = self._tasks.get(response_id)
        if task is not None:
            task.cancel()
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(
        self,
        response_id: str,
        viewer: Viewer,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
    ) -> dict[str, Any]:
        items = await self.store.get_input(response_id, viewer)
        if items is None:
            raise _not_found()
        if order == "desc":
            items = list(reversed(items))
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    # lifecycle (Redis mode: renew our background responses, take over orphans)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(
            sweep(
                self.store,
                self.owner,
                self.settings.response_lease,
                self._tasks.keys,
                self._take_over,
                "background response",
            )
        )

    async def _take_over(self, record: StoredResponse) -> None:
        """Generate a silent gateway's background response again, from what was stored."""
        run = record.run or {}
        items = await self.store.get_input(record.id, record.creator) or []
        try:
            body = ResponseCreateRequest.model_validate({**run["request"], "input": items})
            ctx = RequestContext(
                request_id=record.id,
                priority=run["lane"],
                timeout=str(run["timeout"]),
                started=time.perf_counter(),
            )
            history = await self._history(body.previous_response_id, record.creator)
            chat_input = to_chat_input(body.instructions, history, body.input_items())
            started = await self.chat.start(self._chat_request(body, chat_input, ctx), ctx)
        except errors.ServiceError as exc:
            record.response = {
                **record.response,
                "status": "failed",
                "error": error_object(exc),
            }
            await self.store.update(record)
            return
        running = Running(
            id=record.id,
            item_id=run["item_id"],
            created_at=int(record.response["created_at"]),
            settings={k: record.response[k] for k in echoed_settings(body, True)},
            store=True,
            logprobs=LOGPROBS in (body.include or ()),
            viewer=record.creator,
            started=started,
        )
        record.run = {**run, "job_id": started.job.id}
        self._start(record, running)

    async def aclose(self) -> None:
        await stop([*self._tasks.values(), self._sweeper])
        await self.store.close()


def viewer_of(ctx: RequestContext) -> Viewer:
    """Who asks, as the response store sees it: the tenant, and the user of a token."""
    identity = ctx.identity
    return Viewer(ctx.tenant, identity.digest() if identity is not None else None)


def _pngs(images: list[ImageInput]) -> list[str]:
    return [png_data_url(image)[0] for image in images]


def _response_format(body: ResponseCreateRequest) -> ResponseFormat | None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    schema = JSONSchema.model_validate(
        {
            "name": fmt.name or "response",
            "description": fmt.description,
            "schema": fmt.schema_,
            "strict": fmt.strict,
        }
    )
    return ResponseFormat(type="json_schema", json_schema=schema)


def _renamed(
    exc: errors.ServiceError, chat_input: ChatInput, history: list[dict[str, Any]]
) -> errors.ServiceError:
    if history and exc.code == "context_length_exceeded":
        exc.param = "previous_response_id"
        exc.message = (
            "The conversation of previous_response_id, this input and max_output_tokens do "
            "not fit the model's context: " + exc.message
        )
        return exc
    return rename_param(exc, chat_input.sources)


def _not_found(param: str = "response_id") -> errors.NotFound:
    return errors.NotFound("No response with that id.", param=param, code="response_not_found")
