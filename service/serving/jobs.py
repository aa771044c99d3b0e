"""The one path a generation takes, for every endpoint (chat, reads, and later
Responses): submit a `Job` to the queue, then read its events.

`submit` joins the job to the caller's trace (the worker's spans continue it)
under a `queue.submit` span, and counts a refusal (`Overloaded`: lane full, 429)
in `gmaivl_rejections_total`. `collect` reads the events to the end: the text,
the logprobs and the final `Finish`; a `Restarted` (another worker took the job
over) starts the text over, a `JobFailed` is raised as its error. Streaming
endpoints take the `first_batch` (a failure before any output is raised, so it
keeps its HTTP status), then read `relayed` batches: what a stream may still send.

Whoever submits owns the event stream: closing it before its end cancels the job.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from service import errors, tracing
from service.core.generation import Delta, Finish, TokenLogprobs
from service.core.jobs import Job, JobEvent, JobFailed, Restarted, is_terminal
from service.metrics import ServiceMetrics
from service.queue.protocols import GatewayQueue

Events = AsyncGenerator[list[JobEvent], None]


@dataclass
class Collected:
    text: str
    finish: Finish
    logprobs: list[TokenLogprobs] = field(default_factory=list)


class JobPath:
    def __init__(self, queue: GatewayQueue, metrics: ServiceMetrics) -> None:
        self.queue = queue
        self.metrics = metrics

    async def submit(self, job: Job) -> Events:
        """Enqueue `job` in the caller's trace; its event stream (the caller closes it)."""
        try:
            with tracing.span("queue.submit", {"gmaivl.lane": job.lane.value}):
                job.trace = tracing.carrier()  # the worker's spans join this trace
                await self.queue.submit(job)
        except errors.Overloaded as exc:
            self.metrics.rejections.labels(exc.code or "overloaded").inc()
            raise
        return self.queue.events(job.id)

    async def cancel(self, job_id: str) -> None:
        """Drop the job if still queued, abort it if running."""
        await self.queue.cancel(job_id)


async def collect(events: Events, first_batch: Callable[[], None] | None = None) -> Collected:
    """Reads `events` to its `Finish`; `first_batch` is called once, when output starts."""
    pieces: list[str] = []
    logprobs: list[TokenLogprobs] = []
    started = False
    async for batch in events:
        if not started and first_batch is not None:
            first_batch()
        started = True
        for event in batch:
            if isinstance(event, Delta):
                pieces.append(event.text)
                logprobs.extend(event.logprobs)
            elif isinstance(event, Restarted):
                pieces.clear()  # another worker starts over: a transparent retry
                logprobs.clear()
            elif isinstance(event, JobFailed):
                raise event.to_exception()
            else:
                return Collected("".join(pieces), event, logprobs)
    raise errors.EngineError("The response ended without finishing.")


async def first_batch(events: AsyncIterator[list[JobEvent]]) -> list[JobEvent]:
    """The first batch; a failure before any output is raised, so it keeps its status."""
    try:
        batch = await anext(events)
    except StopAsyncIteration as exc:
        raise errors.EngineError("The response ended without output.") from exc
    if isinstance(batch[0], JobFailed):
        raise batch[0].to_exception()
    return batch


WORKER_LOST = JobFailed(
    "worker_lost",
    "The worker running this request was lost after it started answering; retry the request.",
)
ENDED = JobFailed("engine_error", "The response ended without finishing.")


async def relayed(
    first: list[JobEvent], events: Events
) -> AsyncGenerator[list[Delta | Finish | JobFailed], None]:
    """The batches a streaming endpoint relays, from `first` on: a `Restarted` before
    any text is dropped (the new attempt simply continues); after text it ends the
    stream as `worker_lost` (splicing a second attempt would garble the answer); an
    event stream that stops without its `Finish` ends as `engine_error`. The last
    batch ends with a `Finish` or a `JobFailed`."""
    batch = first
    sent_text = False
    while True:
        out: list[Delta | Finish | JobFailed] = []
        for event in batch:
            if isinstance(event, Restarted):
                if not sent_text:
                    continue
                event = WORKER_LOST
            sent_text = sent_text or isinstance(event, Delta)
            out.append(event)
            if is_terminal(event):
                yield out
                return
        yield out
        try:
            batch = await anext(events)
        except StopAsyncIteration:
            batch = [ENDED]
