"""Gateway side of the results: one inbox stream per gateway, read by one task.

Every job names its gateway's inbox (`reply_to`); workers append the job's
events there, tagged with the job id: one entry per worker flush, holding the
events of all that gateway's jobs published since the previous flush. A gateway
therefore reads exactly one stream however many requests it is answering: one
blocking `XREAD` returns the events of all of them, and a new request costs no
Redis command here; it only registers its job id before the job is enqueued, so
no event can arrive for a job the gateway does not know yet.

The gateway trims what it has read (XTRIM MINID) about once a second; the
inbox has a TTL that workers refresh when they write and that lets the inbox of
a gateway that died expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from service.core.jobs import JobEvent, JobFailed
from service.redis import keys
from service.redis.codec import decode_events
from service.redis.multiplexed import MultiplexedRedis

log = logging.getLogger("gmaivl.queue")

UNAVAILABLE = JobFailed("not_ready", "The queue became unavailable; retry later.")
TRIM_INTERVAL = 1.0
BLOCK_SECONDS = 1  # the blocking read's own timeout
READ_SLACK = 2.0  # seconds it may run past that before its connection is given up


class _Subscription:
    __slots__ = ("buffer", "timer", "waiter")

    def __init__(self) -> None:
        self.buffer: list[JobEvent] = []
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # the job's deadline

    def push(self, events: list[JobEvent]) -> None:
        self.buffer.extend(events)
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _after(entry_id: bytes, last: bytes) -> bool:
    ms, _, seq = entry_id.partition(b"-")
    last_ms, _, last_seq = last.partition(b"-")
    return (int(ms), int(seq)) > (int(last_ms), int(last_seq))


class GatewayInbox:
    """`redis` for what is rare (INFO, XTRIM), `shared` (the gateway's shared
    connection) for the last look at a deadline; the blocking read has a connection
    of its own, on which a read that gets no answer within its bound is given up
    (a half-open connection: a failover, a partition)."""

    def __init__(self, redis: aioredis.Redis, shared: MultiplexedRedis, ttl: int) -> None:
        self.redis = redis
        self.shared = shared
        self.ttl = ttl
        self._reads = MultiplexedRedis(
            redis, reply_timeout=BLOCK_SECONDS + READ_SLACK, blocking=True
        )
        self.key = keys.inbox(uuid.uuid4().hex[:12])
        self._last = b"0-0"
        self._trimmed_at = 0.0
        self._subs: dict[str, _Subscription] = {}
        self._reader: asyncio.Task[None] | None = None

    def open(self, job_id: str) -> None:
        """Accept events for `job_id` from now on (call before enqueueing the job)."""
        self._subs[job_id] = _Subscription()

    def close(self, job_id: str) -> None:
        sub = self._subs.pop(job_id, None)
        if sub is not None and sub.timer is not None:
            sub.timer.cancel()

    async def next_batch(self, job_id: str, timeout: float) -> list[JobEvent] | None:
        """The events that arrived for the job, waiting up to `timeout` (the time left
        to the job's deadline); None when it passes."""
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_forever())
        sub = self._subs[job_id]
        if not sub.buffer:
            # A bare future per wait, and one timer per job (its deadline) rather than
            # one per wait: this runs once per batch of every request.
            if sub.timer is None or sub.timer.when() <= loop.time():
                sub.timer = loop.call_later(max(timeout, 0.001), sub.wake)
            sub.waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                sub.waiter = None
            if not sub.buffer:
                return None
        batch, sub.buffer = sub.buffer, []
        return batch

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._reads.close()

    async def _read_forever(self) -> None:
        server = await self._server()
        while self._subs:
            try:
                reply = await self._reads.execute(
                    "XREAD", "COUNT", 4096, "BLOCK", BLOCK_SECONDS * 1000,
                    "STREAMS", self.key, self._last,
                )  # fmt: skip
                if time.monotonic() - self._trimmed_at > TRIM_INTERVAL:
                    self._trimmed_at = time.monotonic()
                    await self.redis.xtrim(self.key, minid=self._last)
            except RedisError as exc:
                log.warning("inbox read failed: %s", type(exc).__name__)
                await asyncio.sleep(0.2)
                server = await self._after_failure(server)
                continue
            self._take_new(reply)

    async def last_look(self, job_id: str) -> list[JobEvent] | None:
        """At the job's deadline: what the inbox holds now for it (one XREAD that does
        not block), so events written in time are not lost to the reader's timing;
        None when there are none."""
        try:
            reply = await self.shared.execute(
                "XREAD", "COUNT", 4096, "STREAMS", self.key, self._last
            )  # fmt: skip
        except RedisError:
            reply = None
        self._take_new(reply)
        sub = self._subs.get(job_id)
        if sub is None or not sub.buffer:
            return None
        batch, sub.buffer = sub.buffer, []
        return batch

    def _take_new(self, reply: list | None) -> None:
        """Dispatch the entries after the last one read (`last_look` and the reader may
        both have read some). `reply`: XREAD's, [[key, [[entry id, [field, value]]]]]."""
        for _, entries in reply or []:
            if not _after(entries[0][0], self._last):
                entries = [e for e in entries if _after(e[0], self._last)]
                if not entries:
                    continue
            self._last = entries[-1][0]
            self._dispatch(entries)

    def _dispatch(self, entries: list[list]) -> None:
        """Group the entries by job, so each waiting request wakes once per read."""
        by_job: dict[str, list[JobEvent]] = {}
        for _, (_, events) in entries:  # one field per entry: "e", the events
            for job_id, event in decode_events(events):
                if job_id in self._subs:  # else: the request has gone; its events are void
                    by_job.setdefault(job_id, []).append(event)
        for job_id, events in by_job.items():
            self._subs[job_id].push(events)

    async def _server(self) -> str | None:
        """The identity of the Redis server that answers now (its run id, new with every
        start; a promoted replica has its own), None when none answers. A server that
        answers but may not say (an ACL without INFO) gets a new identity each time:
        every failed read is then taken for a possible loss, as if it had changed."""
        try:
            info = await asyncio.wait_for(self.redis.info("server"), 1.0 + READ_SLACK)
        except ResponseError:
            return uuid.uuid4().hex
        except (RedisError, TimeoutError):
            return None
        return str(info.get("run_id"))

    async def _after_failure(self, before: str | None) -> str | None:
        """A read failed. A broken or slow connection to the same server lost nothing
        (the next read goes on from the last entry read); a different server (a restart,
        a failover) may have lost the jobs and events it was sent, so every waiting
        request is told and its gateway resubmits the job. While none answers, requests
        wait, bounded by their deadlines."""
        now = await self._server()
        if now is None:
            return before
        if now != before:
            for sub in self._subs.values():
                sub.push([UNAVAILABLE])
        return now
