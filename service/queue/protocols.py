"""The queue between gateways and workers: one protocol per side, and its semantics.

`GatewayQueue` (what a gateway needs):
- `submit(job)` admits a job into its lane or raises `errors.Overloaded` with a
  Retry-After computed from the measured drain rate. Nothing is queued unbounded.
- `events(job_id)` yields the job's events in order, in batches (all that are
  ready at once, so a consumer that falls behind catches up in one step): `Delta`s,
  then exactly one terminal event (`Finish` or `JobFailed`) ending the last batch.
  If the job's deadline passes first, the stream ends with
  `JobFailed(deadline_exceeded)`: a consumer never waits past the deadline.
  A stream closed before its terminal event (the client left) or ended by the
  deadline cancels the job, as `cancel` does.
- `cancel(job_id)`: a queued job is dropped (never runs); a running job's worker
  is told through `on_cancel` and aborts the engine request. Idempotent.
- `depths()`, `oldest_ages()`, `live_workers()`: what admission, readiness and
  the queue gauges read (for the queue's default model, or the one named).
- `models()`: the model ids workers announced within `KNOWN_FOR` seconds, each
  with its parent (LoRA base) and live worker count; `errors.NotReady` when the
  registry does not answer (never an empty list for it: a gateway would call its
  models unknown). The in-process queue returns none: its one worker's model is
  the process's own.

`WorkerQueue` (what a worker needs):
- `take(timeout)` returns the next job, highest lane first with aging (see
  `core.lanes.effective_rank`), or None after `timeout`. Jobs cancelled or past
  their deadline while queued are not returned; an expired job gets a
  `JobFailed(deadline_exceeded)` so its client learns why.
- `take_many(timeout, limit)` is `take` for a worker with several free slots:
  once a job is there, it returns up to `limit` jobs waiting at that moment, in
  the order `take` would return them (an empty list after `timeout`). It takes
  only what the caller starts at once, so jobs are not held back from other
  workers; in Redis it costs one round trip instead of `limit`.
- `publish(job_id, event)` appends to the job's results.
- `complete(job_id)` acknowledges the job (after its terminal event); it feeds
  the drain-rate meter behind Retry-After.
- `heartbeat()` is called by the worker every heartbeat interval (liveness and,
  in Redis, keeping its in-flight jobs claimed); `leave()` when it stops.
- `on_cancel(job_id, callback)` calls `callback()` (from the event loop) once
  the job is cancelled, at once if it already is; it returns a function that
  unregisters the callback. A callback, not a waiting task: one fewer task per job.

Both sides have `ping()` (reachable?) and `close()`. The in-process queue
implements both protocols in one object; Redis has one class per side
(`service.redis`). Deadlines are wall-clock epoch seconds so they mean the same
in every process.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from service.core.jobs import Job, JobEvent
from service.core.lanes import Lane

KNOWN_FOR = 600.0  # seconds a model id stays known after its last worker's heartbeat


@dataclass(frozen=True)
class ModelSeen:
    """A model id as the workers announce it."""

    id: str
    parent: str | None  # the base model of a LoRA adapter
    live_workers: int  # workers with a fresh heartbeat serving it
    last_seen: float  # epoch seconds of the latest heartbeat


class GatewayQueue(Protocol):
    async def submit(self, job: Job) -> None: ...

    def events(self, job_id: str) -> AsyncIterator[list[JobEvent]]: ...

    async def cancel(self, job_id: str) -> None: ...

    async def depths(self, model: str | None = None) -> dict[Lane, int]: ...

    async def oldest_ages(self, model: str | None = None) -> dict[Lane, float]: ...

    async def live_workers(self, model: str | None = None) -> int: ...

    async def models(self) -> list[ModelSeen]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class WorkerQueue(Protocol):
    async def take(self, timeout: float) -> Job | None: ...

    async def take_many(self, timeout: float, limit: int) -> list[Job]: ...

    async def publish(self, job_id: str, event: JobEvent) -> None: ...

    async def complete(self, job_id: str) -> None: ...

    def on_cancel(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]: ...

    async def heartbeat(self) -> None: ...

    async def leave(self) -> None: ...

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
