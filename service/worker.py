"""The worker: takes jobs while its engine has room, runs them, publishes results.

One worker drives one engine. It holds at most `engine.max_concurrency` jobs at
once (it does not take work it cannot start); with several slots free it takes
up to `TAKE_AT_MOST` waiting jobs at once (one round trip in Redis), not more,
so a burst is spread over the workers. For each job it streams the
engine's events to the queue and watches two things: cancellation (client gone)
and the job's deadline; either aborts the engine request so its slot is freed
at once. Every job ends with a terminal event and an ack, whatever happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from service import errors, tracing
from service.core.generation import Finish
from service.core.jobs import Job, JobFailed
from service.engines.base import Engine
from service.metrics import ServiceMetrics
from service.queue.protocols import WorkerQueue

log = logging.getLogger("gmaivl.worker")

TAKE_AT_MOST = 8  # jobs taken in one call when that many slots are free


@dataclasses.dataclass(eq=False)
class Worker:
    queue: WorkerQueue
    engine: Engine
    metrics: ServiceMetrics | None = None
    _: dataclasses.KW_ONLY
    poll_interval: float = 0.5
    heartbeat_interval: float = 1.0
    drain_grace: float = 30.0

    def __post_init__(self) -> None:
        if self.metrics is not None:
            for collector in self.engine.collectors():  # e.g. vllm:* next to gmaivl_* series
                self.metrics.registry.register(collector)
        self._slots = asyncio.Semaphore(self.engine.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.alive = False

    async def run(self, *, burst: bool = False) -> None:
        """Take and run jobs until `stop()`; with `burst`, return once the queue is empty
        and every started job has finished (deterministic tests, no sleeps)."""
        self.alive = True
        beating = None if burst else asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping:
                await self._slots.acquire()
                free = 1  # and whatever else is free now, up to TAKE_AT_MOST
                while free < TAKE_AT_MOST and not self._slots.locked():
                    await self._slots.acquire()  # does not wait: a slot is free
                    free += 1
                try:
                    jobs = await self.queue.take_many(0 if burst else self.poll_interval, free)
                except errors.NotReady:
                    jobs = []
                    log.warning("queue unavailable; retrying in 1 s")
                    await asyncio.sleep(1.0)
                for _ in range(free - len(jobs)):
                    self._slots.release()
                if not jobs and burst:
                    break
                for job in jobs:
                    task = asyncio.create_task(self._run_job(job))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            await self._drain(None if burst else self.drain_grace)
        finally:
            if beating is not None:
                beating.cancel()
            self.alive = False
            await self.queue.leave()

    async def _drain(self, grace: float | None) -> None:
        """Let in-flight jobs finish for `grace` seconds; cancel the rest. A cancelled job
        is not acknowledged: a distributed queue hands it to another worker."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("handing back %d unfinished jobs", len(late))
            await asyncio.wait(late)

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.queue.heartbeat()
            except errors.NotReady:
                pass
            except Exception as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
            await asyncio.sleep(self.heartbeat_interval)

    def stop(self) -> None:
        self._stopping = True

    @property
    def taking(self) -> bool:
        """Running and not draining: what a worker's readiness reports."""
        return self.alive and not self._stopping

    async def _run_job(self, job: Job) -> None:
        try:
            now = time.time()
            if self.metrics is not None:
                self.metrics.queue_wait.labels(job.lane.value).observe(
                    max(0.0, now - job.enqueued_at)
                )
            with tracing.resumed(job.trace):
                lane = {"gmaivl.lane": job.lane.value}
                tracing.record_span("queue.wait", job.enqueued_at, now, lane)
                with tracing.span("worker.job", lane):
                    outcome = await self._generate(job)
                    if outcome is not None:
                        await self.queue.publish(job.id, outcome)
            await self.queue.complete(job.id)
        except asyncio.CancelledError:
            await self.engine.abort(job.request.request_id)  # worker stopping: hand it back
            raise
        except Exception as exc:
            # The queue went away mid-job: not acknowledged, so it is redelivered later.
            log.warning("job %s left unacknowledged: %s", job.id, type(exc).__name__)
        finally:
            self._slots.release()

    async def _generate(self, job: Job) -> JobFailed | None:
        """Run the job in this task; return its failure event, or None when it finished
        or was cancelled. Cancellation and the deadline interrupt it by cancelling this
        task (no watcher task per job)."""
        remaining = job.remaining()
        if remaining <= 0:
            return JobFailed("deadline_exceeded", "The request expired before it started.")
        task = asyncio.current_task()
        assert task is not None
        interrupted: list[str] = []  # why this task was cancelled, if it was

        def interrupt(reason: str) -> None:
            if not interrupted:
                interrupted.append(reason)
                task.cancel()

        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + remaining, interrupt, "deadline")
        unregister = self.queue.on_cancel(job.id, lambda: interrupt("cancelled"))
        try:
            result = await self._pump(job)
            interrupted.append("done")  # a late cancel must not hit the cleanup below
            return result
        except asyncio.CancelledError:
            if not interrupted or interrupted[0] == "done":
                raise  # the worker itself is being stopped
            task.uncancel()
        finally:
            timer.cancel()
            unregister()
        reason = interrupted[0]
        if self.metrics is not None:
            self.metrics.engine_aborts.labels(reason).inc()
        await self.engine.abort(job.request.request_id)
        if reason == "deadline":
            return JobFailed("deadline_exceeded", "The request ran past its deadline.")
        return None

    async def _pump(self, job: Job) -> JobFailed | None:
        with tracing.span("engine.generate", {"gmaivl.engine": self.engine.name}) as span:
            return await self._pump_traced(job, span)

    async def _pump_traced(self, job: Job, span: Any) -> JobFailed | None:
        """Engine events -> the queue; on the engine span (when traced) the first
        token as an event and the token counts as attributes."""
        request = job.request
        if span is not None:  # vLLM continues the trace from the engine's span
            request = dataclasses.replace(request, trace_headers=tracing.carrier())
        first_token = span is not None
        try:
            async for event in self.engine.generate(request):
                if isinstance(event, Finish):
                    if self.metrics is not None:  # counted before the client sees the answer
                        usage = event.usage
                        self.metrics.prompt_tokens.labels(job.model).inc(usage.prompt_tokens)
                        self.metrics.completion_tokens.labels(job.model).inc(
                            usage.completion_tokens
                        )
                    if span is not None:
                        span.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
                        span.set_attribute(
                            "gen_ai.usage.output_tokens", event.usage.completion_tokens
                        )
                        span.set_attribute("gmaivl.finish_reason", event.finish_reason)
                elif first_token:
                    span.add_event("first_token")
                    first_token = False
                await self.queue.publish(job.id, event)
            return None
        except errors.ServiceError as exc:
            return JobFailed.from_exception(exc)
        except Exception as exc:
            # Never let one request kill the worker; the client gets a generic 500.
            log.error("engine failed on job %s:\n%s", job.id, errors.redacted_traceback(exc))
            return JobFailed("engine_error", "The engine failed to generate a response.")
