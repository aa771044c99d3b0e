"""The one path a generation takes, for every endpoint (chat, reads, and later
Responses): submit a `Job` to the queue, then read its events.

`submit` joins the job to the caller's trace (the worker's spans continue it)
under a `queue.submit` span, and counts a refusal (`Overloaded`: lane full, 429)
in `gmaivl_rejections_total`. `collect` reads the events to the end: the text,
the logprobs and the final `Finish`; a `Restarted` (another worker took the job
over) starts the text over, a `JobFailed` is raised as its error. Streaming
endpoints read the same events themselves, batch by batch.

Whoever submits owns the event stream: closing it before its end cancels the job.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from service import errors, tracing
from service.core.generation import Delta, Finish, TokenLogprobs
from service.core.jobs import Job, JobEvent, JobFailed, Restarted
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
