"""The queue interface between gateways and workers, and its semantics.

Gateway side:
- `submit(job)` admits a job into its lane or raises `errors.Overloaded` with a
  Retry-After computed from the measured drain rate. Nothing is queued unbounded.
- `events(job_id)` yields the job's events in order, in batches (all that are
  ready at once, so a consumer that falls behind catches up in one step): `Delta`s,
  then exactly one terminal event (`Finish` or `JobFailed`) ending the last batch.
  If the job's deadline passes first, the stream ends with
  `JobFailed(DeadlineExceeded)`: a consumer never waits past the deadline.
  A stream closed before its terminal event (the client left) or ended by the
  deadline cancels the job, as `cancel` does.
- `cancel(job_id)`: a queued job is dropped (never runs); a running job's worker
  is told through `on_cancel` and aborts the engine request. Idempotent.

Worker side:
- `take(timeout)` returns the next job, highest lane first with aging (see
  `lanes.effective_rank`), or None after `timeout`. Jobs cancelled or past their
  deadline while queued are not returned; an expired job gets a
  `JobFailed(DeadlineExceeded)` so its client learns why.
- `publish(job_id, event)` appends to the job's result stream.
- `complete(job_id)` acknowledges the job (after its terminal event); it feeds
  the drain-rate meter behind Retry-After.
- `heartbeat()` is called by the worker every heartbeat interval (liveness and,
  in Redis, keeping its in-flight jobs claimed); `leave()` when it stops.
- `on_cancel(job_id, callback)` calls `callback()` (from the event loop) once
  the job is cancelled, at once if it already is; it returns a function that
  unregisters the callback. A callback, not a waiting task: one fewer task per job.

Deadlines are wall-clock epoch seconds so they mean the same in every process.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from service import errors
from service.engines.base import Delta, Finish, GenerationRequest
from service.queue.lanes import Lane


@dataclass(frozen=True)
class JobFailed:
    """Terminal event for a job that produced no `Finish`. `error` names a class in
    `service.errors`; the message is safe to show the client (no request content)."""

    error: str
    message: str
    code: str | None = None
    param: str | None = None

    @classmethod
    def from_exception(cls, exc: errors.ServiceError) -> JobFailed:
        return cls(type(exc).__name__, exc.message, exc.code, exc.param)

    def to_exception(self) -> errors.ServiceError:
        cls = getattr(errors, self.error, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.ServiceError)):
            cls = errors.EngineError
        if cls is errors.Overloaded:
            return errors.Overloaded(self.message, retry_after=1, code=self.code)
        return cls(self.message, param=self.param, code=self.code)


@dataclass(frozen=True)
class Restarted:
    """The job's worker died and another one started it again from the beginning
    (Redis mode). Text published before this marker is void: a collecting reader
    starts over; a reader that already forwarded text must end with a retriable
    error, never splice two attempts."""

    attempt: int


JobEvent = Delta | Finish | JobFailed | Restarted
DEADLINE_PASSED = JobFailed("DeadlineExceeded", "The request did not complete before its deadline.")


def is_terminal(event: JobEvent) -> bool:
    return isinstance(event, Finish | JobFailed)


@dataclass
class Job:
    id: str
    model: str
    lane: Lane
    request: GenerationRequest
    deadline: float
    enqueued_at: float = field(default_factory=time.time)
    tenant: str | None = None

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)


class JobQueue(Protocol):
    async def submit(self, job: Job) -> None: ...

    def events(self, job_id: str) -> AsyncIterator[list[JobEvent]]: ...

    async def cancel(self, job_id: str) -> None: ...

    async def take(self, timeout: float) -> Job | None: ...

    async def publish(self, job_id: str, event: JobEvent) -> None: ...

    async def complete(self, job_id: str) -> None: ...

    def on_cancel(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]: ...

    async def heartbeat(self) -> None: ...

    async def leave(self) -> None: ...

    async def depths(self) -> dict[Lane, int]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class DrainRate:
    """Jobs completed per second, as an exponentially weighted moving average."""

    def __init__(self, half_life: float = 10.0) -> None:
        self.half_life = half_life
        self._rate = 0.0
        self._last = time.monotonic()

    def record(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        dt = max(now - self._last, 1e-3)
        weight = 0.5 ** (dt / self.half_life)
        # One completion over dt seconds, blended with the history.
        self._rate = weight * self._rate + (1 - weight) * (1.0 / dt)
        self._last = now

    @property
    def per_second(self) -> float:
        return self._rate

    def retry_after(self, jobs_ahead: int, floor: int = 1, ceiling: int = 60) -> int:
        """Seconds until `jobs_ahead` jobs should have drained, clamped to [floor, ceiling]."""
        if self._rate <= 0:  # nothing drained yet: a guess that is neither 0 nor forever
            return min(max(floor, 5), ceiling)
        return min(max(floor, math.ceil(jobs_ahead / self._rate)), ceiling)
