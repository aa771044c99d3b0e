"""The in-process queue: the embedded default (`gmai-vl serve`), one asyncio loop.

Semantics are those written in `service.queue.protocols`; one object is both
the gateway's and the worker's side. Specifics: each lane is a
FIFO deque bounded by `max_depth`; result streams are unbounded buffers (their
producer is bounded by max_tokens); nothing survives the process. Waiting is
done on bare futures, not asyncio.Queue/Condition: this is the per-token hot
path of every stream (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from service import errors
from service.core.jobs import DEADLINE_PASSED, Job, JobEvent, JobFailed, is_terminal
from service.core.lanes import LANE_ORDER, Lane, effective_rank
from service.queue.protocols import DrainRate, ModelSeen


class _Entry:
    """One job: its result buffer, its reader's waiter, its cancellation callbacks."""

    __slots__ = ("buffer", "cancelled", "job", "on_cancel", "waiter")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.buffer: list[JobEvent] = []
        self.waiter: asyncio.Future[None] | None = None
        self.cancelled = False
        self.on_cancel: list[Callable[[], None]] = []

    def put(self, event: JobEvent) -> None:
        self.buffer.append(event)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def batch(self) -> list[JobEvent]:
        while not self.buffer:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        batch, self.buffer = self.buffer, []
        return batch

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            for callback in self.on_cancel:
                callback()
            self.on_cancel.clear()


class InProcessJobQueue:
    def __init__(
        self, *, max_depth: int = 256, aging_seconds: float = 10.0, heartbeat_interval: float = 1.0
    ) -> None:
        self.max_depth = max_depth
        self.aging_seconds = aging_seconds
        self.heartbeat_interval = heartbeat_interval
        self._last_heartbeat: float | None = None  # the worker's; None: no worker running
        self.drain = DrainRate()
        self._lanes: dict[Lane, deque[_Entry]] = {lane: deque() for lane in LANE_ORDER}
        self._entries: dict[str, _Entry] = {}
        self._takers: deque[asyncio.Future[None]] = deque()

    # gateway side

    async def submit(self, job: Job) -> None:
        lane = self._lanes[job.lane]
        if len(lane) >= self.max_depth:
            ahead = sum(len(self._lanes[q]) for q in LANE_ORDER[: job.lane.rank + 1])
            raise errors.Overloaded(
                f"The {job.lane.value} queue is full; retry later.",
                retry_after=self.drain.retry_after(ahead),
            )
        entry = _Entry(job)
        self._entries[job.id] = entry
        lane.append(entry)
        while self._takers:
            taker = self._takers.popleft()
            if not taker.done():
                taker.set_result(None)
                break

    async def events(self, job_id: str) -> AsyncIterator[list[JobEvent]]:
        entry = self._entries.get(job_id)
        if entry is None:
            return
        # One timer per job bounds every wait below (cheaper than a timeout per event).
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + entry.job.remaining(), entry.put, DEADLINE_PASSED)
        finished = False
        try:
            while True:
                batch = await entry.batch()
                for i, event in enumerate(batch):
                    if is_terminal(event):
                        finished = event is not DEADLINE_PASSED
                        yield batch[: i + 1]
                        return
                yield batch
        finally:
            timer.cancel()
            if not finished:
                # Abandoned by its reader (client gone) or past its deadline: cancel it.
                entry.cancel()
            self._entries.pop(job_id, None)

    async def cancel(self, job_id: str) -> None:
        """Idempotent; harmless on a finished job."""
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            entry.cancel()  # queued: `take` skips it; running: its worker's callback fires

    # worker side

    async def take(self, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        while True:
            entry = self._pop_next()
            if entry is not None:
                return entry.job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            taker = asyncio.get_running_loop().create_future()
            self._takers.append(taker)
            try:
                async with asyncio.timeout(remaining):
                    await taker
            except TimeoutError:
                return None

    async def take_many(self, timeout: float, limit: int) -> list[Job]:
        job = await self.take(timeout)
        if job is None:
            return []
        jobs = [job]
        while len(jobs) < limit and (entry := self._pop_next()) is not None:
            jobs.append(entry.job)
        return jobs

    async def publish(self, job_id: str, event: JobEvent) -> None:
        entry = self._entries.get(job_id)
        if entry is not None:
            entry.put(event)

    async def complete(self, job_id: str) -> None:
        self.drain.record()

    def on_cancel(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        entry = self._entries.get(job_id)
        if entry is None or entry.cancelled:
            asyncio.get_running_loop().call_soon(callback)
            return _noop
        entry.on_cancel.append(callback)
        return lambda: callback in entry.on_cancel and entry.on_cancel.remove(callback)

    async def heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()

    async def leave(self) -> None:
        self._last_heartbeat = None

    # observation

    async def depths(self, model: str | None = None) -> dict[Lane, int]:
        return {lane: len(q) for lane, q in self._lanes.items()}

    async def oldest_ages(self, model: str | None = None) -> dict[Lane, float]:
        """Seconds the oldest waiting job of each lane has waited (0 when none)."""
        now = time.time()
        return {
            lane: next((now - e.job.enqueued_at for e in q if not e.cancelled), 0.0)
            for lane, q in self._lanes.items()
        }

    async def live_workers(self, model: str | None = None) -> int:
        """1 while the process's worker beats (fresh within 3 intervals), else 0."""
        last = self._last_heartbeat
        fresh = last is not None and time.monotonic() - last < 3 * self.heartbeat_interval + 2
        return 1 if fresh else 0

    async def models(self) -> list[ModelSeen]:
        """None announced: the embedded process knows its one model itself."""
        return []

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        for entry in list(self._entries.values()):
            entry.put(JobFailed("not_ready", "The server is shutting down."))
        self._entries.clear()

    def _pop_next(self) -> _Entry | None:
        """Pop the best head across lanes, dropping cancelled and expired entries."""
        now = time.time()
        best: _Entry | None = None
        best_key: tuple[float, float] | None = None
        for lane in LANE_ORDER:
            q = self._lanes[lane]
            while q and (q[0].cancelled or q[0].job.deadline <= now):
                dropped = q.popleft()
                if not dropped.cancelled:
                    dropped.put(JobFailed("deadline_exceeded", "The request expired while queued."))
            if not q:
                continue
            job = q[0].job
            key = (effective_rank(lane, now - job.enqueued_at, self.aging_seconds), job.enqueued_at)
            if best_key is None or key < best_key:
                best, best_key = q[0], key
        if best is not None:
            self._lanes[best.job.lane].popleft()
        return best


def _noop() -> None:
    return None
