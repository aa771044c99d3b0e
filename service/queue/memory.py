"""The in-process queue: the embedded default (`gmai-vl serve`), one asyncio loop.

Semantics are those written in `service.queue.base`. Specifics: each lane is a
FIFO deque bounded by `max_depth`; result streams are unbounded asyncio queues
(their producer is bounded by max_tokens); nothing survives the process.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from service import errors
from service.engines.base import Finish
from service.queue.base import DrainRate, Job, JobEvent, JobFailed
from service.queue.lanes import LANE_ORDER, Lane, effective_rank


class _Entry:
    __slots__ = ("cancelled", "events", "job")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.cancelled = asyncio.Event()


class InProcessJobQueue:
    def __init__(self, *, max_depth: int = 256, aging_seconds: float = 10.0) -> None:
        self.max_depth = max_depth
        self.aging_seconds = aging_seconds
        self.drain = DrainRate()
        self._lanes: dict[Lane, deque[_Entry]] = {lane: deque() for lane in LANE_ORDER}
        self._entries: dict[str, _Entry] = {}
        self._available = asyncio.Condition()

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
        async with self._available:
            self._available.notify()

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        entry = self._entries.get(job_id)
        if entry is None:
            return
        while True:
            event = await entry.events.get()
            yield event
            if isinstance(event, Finish | JobFailed):
                self._entries.pop(job_id, None)
                return

    async def cancel(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            # Queued: `take` skips it. Running: the worker sees it in wait_cancelled.
            entry.cancelled.set()

    # worker side

    async def take(self, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        async with self._available:
            while True:
                entry = self._pop_next()
                if entry is not None:
                    return entry.job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._available.wait(), remaining)
                except TimeoutError:
                    return None

    async def publish(self, job_id: str, event: JobEvent) -> None:
        entry = self._entries.get(job_id)
        if entry is not None:
            entry.events.put_nowait(event)

    async def complete(self, job_id: str) -> None:
        self.drain.record()

    async def wait_cancelled(self, job_id: str) -> None:
        entry = self._entries.get(job_id)
        if entry is None:
            return
        await entry.cancelled.wait()

    # observation

    async def depths(self) -> dict[Lane, int]:
        return {lane: len(q) for lane, q in self._lanes.items()}

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        for entry in list(self._entries.values()):
            entry.events.put_nowait(JobFailed("NotReady", "The server is shutting down."))
        self._entries.clear()

    def _pop_next(self) -> _Entry | None:
        """Pop the best head across lanes, dropping cancelled and expired entries."""
        now = time.time()
        best: _Entry | None = None
        best_key: tuple[float, float] | None = None
        for lane in LANE_ORDER:
            q = self._lanes[lane]
            while q and (q[0].cancelled.is_set() or q[0].job.deadline <= now):
                dropped = q.popleft()
                if not dropped.cancelled.is_set():
                    dropped.events.put_nowait(
                        JobFailed("DeadlineExceeded", "The request expired while queued.")
                    )
            if not q:
                continue
            job = q[0].job
            key = (effective_rank(lane, now - job.enqueued_at, self.aging_seconds), job.enqueued_at)
            if best_key is None or key < best_key:
                best, best_key = q[0], key
        if best is not None:
            self._lanes[best.job.lane].popleft()
        return best
