"""Worker side of the Redis queue, beside the take/deliver path in `worker_queue`:
publishing events to gateway inboxes (group commit) and cancel messages (pub/sub).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service import errors
from service.core.jobs import JobEvent
from service.redis import keys
from service.redis.codec import encode_events
from service.redis.multiplexed import Command, MultiplexedRedis

log = logging.getLogger("gmaivl.queue")

CANCELS_KEPT = 4096
MAX_PENDING = 8192  # queued events past which `publish` waits for the flush
FLUSH_INTERVAL = 0.005  # seconds: under load, flushes start at most this often
EXPIRE_EVERY = 1.0  # seconds between refreshes of an inbox's TTL by this worker


class InboxPublisher:
    """Group commit: one flusher task sends everything published while its previous
    pipeline was in flight, for all of this worker's jobs, as one inbox entry per
    gateway. Batches grow with load; order is kept.

    `publish` queues the event and returns: a job's generation does not stop at
    every token for a round trip (a wake-up per event). What `also` queues (the
    ack) waits for its flush, which carries every event published before it. A
    flush that fails marks the jobs it carried: what was queued for them since is
    dropped and their later `publish` and `also` raise `errors.NotReady`, so a
    job whose events may be lost sends no later ones (no gap in its stream) and
    is never acknowledged (its entry is reclaimed and run again). Past `MAX_PENDING`
    queued events a publisher waits for the flush (backpressure).

    Under load a flush waits until `flush_interval` after the previous one began (at
    most that much added latency; none when events are sparse), so at a few
    thousand events a second each entry carries dozens, not two or three: every
    flush costs a round trip here, a command in Redis and a read and a wake-up per
    request in the gateway. The inbox's TTL is refreshed about once a second, not
    with every entry."""

    def __init__(
        self, redis: MultiplexedRedis, ttl: int, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self.redis = redis
        self.ttl = ttl
        self.flush_interval = flush_interval
        self._expired_at: dict[str, float] = {}  # inbox -> when we last refreshed its TTL
        self._pending: list[tuple[str, str, JobEvent]] = []
        self._also: list[tuple[str, list[Command]]] = []  # (job id, commands)
        self._pending_done: asyncio.Future[None] | None = None
        self._pending_ready = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._failed: dict[str, None] = {}  # jobs whose events a failed flush carried

    async def publish(self, inbox: str, job_id: str, event: JobEvent) -> None:
        """Queue the event for the next flush (errors.NotReady if one of the job's
        earlier flushes failed)."""
        self._check(job_id)
        done = self._next_flush()
        self._pending.append((inbox, job_id, event))
        if len(self._pending) > MAX_PENDING:
            await asyncio.shield(done)

    async def also(self, job_id: str, commands: list[Command]) -> None:
        """Queue `commands` into the next flush, after every event published
        before it; returns once they ran (errors.NotReady if Redis failed, or if a
        flush of the job's earlier events did)."""
        self._check(job_id)
        done = self._next_flush()
        self._also.append((job_id, commands))
        await asyncio.shield(done)
        self._check(job_id)  # an earlier flush of its events failed: its commands were dropped

    def forget(self, job_id: str) -> None:
        """The job is over here (acknowledged or given up)."""
        self._failed.pop(job_id, None)

    def _check(self, job_id: str) -> None:
        if job_id in self._failed:
            raise errors.NotReady("The queue is unavailable.")

    def _next_flush(self) -> asyncio.Future[None]:
        """The future of the flush that will carry what is queued now; the first call
        after a flush began arms the next one (the rest of its batch only look)."""
        done = self._pending_done
        if done is not None:
            return done
        loop = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_forever())
        done = self._pending_done = loop.create_future()
        self._pending_ready.set()
        return done

    def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self._pending_done = None  # a later publish starts a new flusher

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        began = 0.0
        while True:
            await self._pending_ready.wait()
            wait = began + self.flush_interval - loop.time()
            if wait > 0:  # the previous flush began moments ago: let this batch grow
                await asyncio.sleep(wait)
            self._pending_ready.clear()
            batch, also, done = self._pending, self._also, self._pending_done
            self._pending, self._also, self._pending_done = [], [], None
            if done is None:
                continue
            began = loop.time()
            try:
                by_inbox: dict[str, list[tuple[str, JobEvent]]] = defaultdict(list)
                for inbox, job_id, event in batch:
                    by_inbox[inbox].append((job_id, event))
                pipe: list[Command] = []
                for inbox, events in by_inbox.items():
                    pipe.append(("XADD", inbox, "*", "e", encode_events(events)))
                    if began - self._expired_at.get(inbox, -EXPIRE_EVERY) >= EXPIRE_EVERY:
                        self._expired_at[inbox] = began
                        pipe.append(("EXPIRE", inbox, self.ttl))
                for _, commands in also:
                    pipe += commands
                await self.redis.pipeline(pipe)
                if len(self._expired_at) > CANCELS_KEPT:  # gateways come and go
                    self._expired_at.clear()
            except Exception as exc:  # callers learn it; the flusher carries on
                self._expired_at.clear()  # Redis may have lost the TTLs with the keys
                log.warning("publish failed: %s", type(exc).__name__)
                failed = {job_id for _, job_id, _ in batch}
                for job_id in failed:
                    self._failed[job_id] = None
                # Queued for them while this flush ran: never sent (a gap, an ack).
                self._pending = [p for p in self._pending if p[1] not in failed]
                self._also = [a for a in self._also if a[0] not in failed]
                while len(self._failed) > CANCELS_KEPT:
                    del self._failed[next(iter(self._failed))]
                done.set_exception(errors.NotReady("The queue is unavailable."))
                done.exception()  # retrieved here too, so no "never retrieved" warning
                continue
            done.set_result(None)


class CancelListener:
    """Cancel messages -> the callbacks registered for their jobs; resubscribes after
    Redis comes back, then checks the cancel flags of `in_flight()` jobs it may have
    missed. Messages seen lately are kept (bounded, oldest dropped first), so a
    callback registered after its job's message, which can even overtake take()'s
    reply, still fires."""

    def __init__(self, redis: aioredis.Redis, in_flight: Callable[[], Iterable[str]]) -> None:
        self.redis = redis
        self.in_flight = in_flight
        self.subscribed = asyncio.Event()
        self._callbacks: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._seen: dict[str, None] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def on_cancel(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        if job_id in self._seen:
            asyncio.get_running_loop().call_soon(callback)
            return lambda: None
        self._callbacks[job_id].append(callback)

        def unregister() -> None:
            if callback in self._callbacks.get(job_id, ()):
                self._callbacks[job_id].remove(callback)

        return unregister

    def forget(self, job_id: str) -> None:
        self._callbacks.pop(job_id, None)
        self._seen.pop(job_id, None)

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(keys.CANCEL_CHANNEL)
                self.subscribed.set()
                for job_id in list(self.in_flight()):  # cancelled while we were not listening
                    if await self.redis.exists(keys.cancel_flag(job_id)):
                        self._fire(job_id)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._fire(message["data"].decode())
            except RedisError:
                self.subscribed.clear()
                await asyncio.sleep(0.5)

    def _fire(self, job_id: str) -> None:
        self._seen[job_id] = None
        if len(self._seen) > CANCELS_KEPT:
            del self._seen[next(iter(self._seen))]
        for callback in self._callbacks.pop(job_id, []):
            callback()
