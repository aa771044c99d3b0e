"""The Redis queue: gateways and workers as separate processes, at-least-once.

Semantics are those of `service.queue.base`, plus what crossing processes needs
(every key is listed in `redis_keys`):

- Submit (one Lua call, `ADMIT_SCRIPT`): admission counts the lane's *waiting*
  jobs (stream length minus entries delivered and not yet acked) against
  `max_depth`; the job document goes into the lane's stream with the gateway's
  inbox as its reply-to, each image once under its content hash (TTL), and a
  token is pushed on the model's wake list.
- Take (one Lua call, `TAKE_SCRIPT`): the next undelivered entry of every lane,
  the best by `lanes.effective_rank` (aging), delivered with XREADGROUP,
  atomically, so concurrent workers never race for the same head; the same call
  counts the delivery, reads the cancel flag and returns the images. With
  nothing to take, workers block on the wake list. About once per
  `heartbeat_interval` the call first reclaims an entry idle longer than
  `visibility_timeout` (XAUTOCLAIM): its worker died.
- Delivery: past `max_deliveries` the job goes to the dead-letter stream and
  its client gets an error. A redelivered job publishes `Restarted` first: a
  non-stream reader starts over (transparent retry), a stream that already
  sent text ends with a retriable error.
- Liveness: workers refresh the idle time of their in-flight entries and their
  heartbeat (zset per model) every `heartbeat_interval`; gateways are ready
  when Redis answers and a worker's heartbeat is fresh.
- Results: the worker appends events, tagged with the job id, to the inbox
  stream of the gateway that submitted the job (`redis_inbox`); the gateway
  reads its inbox with one blocking XREAD for all its requests, each bounded by
  its job's deadline. Inboxes, cancel flags, delivery counters and images all
  expire (`result_ttl`).
- Cancel: a flag (checked when a job is taken, so queued jobs never run) and a
  pub/sub message (so a running job's worker aborts at once).
- Ack: XACK + XDEL on completion, so a lane's length is waiting + running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from service import errors
from service.metrics import ServiceMetrics
from service.queue import redis_keys as keys
from service.queue.base import DEADLINE_PASSED, Job, JobEvent, JobFailed, Restarted, is_terminal
from service.queue.codec import decode_job, encode_job
from service.queue.lanes import LANE_ORDER, Lane
from service.queue.redis_inbox import UNAVAILABLE, GatewayInbox
from service.queue.redis_scripts import ADMIT_SCRIPT, TAKE_SCRIPT
from service.queue.redis_worker import CancelListener, InboxPublisher

log = logging.getLogger("gmaivl.queue")


class RedisJobQueue:
    def __init__(
        self,
        url: str,
        *,
        model: str,
        max_depth: int = 256,
        aging_seconds: float = 10.0,
        visibility_timeout: float = 15.0,
        heartbeat_interval: float = 1.0,
        max_deliveries: int = 3,
        result_ttl: int = 600,
        worker_id: str | None = None,
        metrics: ServiceMetrics | None = None,
        max_connections: int = 4096,
    ) -> None:
        self.metrics = metrics
        self.redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=None,
            health_check_interval=5,
            retry_on_error=[],
            # Each stream being answered holds a connection in a blocking XREAD.
            max_connections=max_connections,
        )
        self.model = model
        self.max_depth = max_depth
        self.aging_seconds = aging_seconds
        self.visibility_timeout = visibility_timeout
        self.heartbeat_interval = heartbeat_interval
        self.max_deliveries = max_deliveries
        self.result_ttl = result_ttl
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._streams = [keys.lane_stream(model, lane) for lane in LANE_ORDER]
        self._groups_ready = False
        self._admit = self.redis.register_script(ADMIT_SCRIPT)
        self._take = self.redis.register_script(TAKE_SCRIPT)
        self._inbox = GatewayInbox(self.redis, result_ttl)
        self._deadlines: dict[str, float] = {}  # gateway side: jobs this process submitted
        self._inflight: dict[str, tuple[str, bytes]] = {}  # worker side: job -> (stream, id)
        self._reply_to: dict[str, str] = {}  # worker side: job -> its gateway's inbox
        self._publisher = InboxPublisher(self.redis, result_ttl)
        self._cancels = CancelListener(self.redis, in_flight=lambda: list(self._inflight))
        self._last_reclaim = 0.0
        self._done_sample: tuple[float, int] | None = None
        self._drain_per_second = 0.0
        self.redeliveries = 0
        self.dead_lettered = 0

    # gateway side

    async def submit(self, job: Job) -> None:
        images = job.request.images
        refs = [hashlib.sha256(image.rgb).hexdigest() for image in images]
        self._inbox.open(job.id)
        try:
            await self._ensure_groups()
            waiting = await self._admit(
                keys=[
                    keys.lane_stream(self.model, job.lane),
                    keys.wake(self.model),
                    *(keys.image(ref) for ref in refs),
                ],
                args=[
                    keys.GROUP,
                    self.max_depth,
                    self.result_ttl,
                    encode_job(job, refs),
                    repr(job.enqueued_at),
                    job.id,
                    " ".join(refs),
                    self._inbox.key,
                    *(image.rgb for image in images),
                ],
            )
        except RedisError as exc:
            self._inbox.close(job.id)
            self._groups_ready = False
            log.warning("submit failed: %s", type(exc).__name__)
            raise errors.NotReady("The queue is unavailable; retry later.") from exc
        if waiting >= 0:
            self._inbox.close(job.id)
            raise errors.Overloaded(
                f"The {job.lane.value} queue is full; retry later.",
                retry_after=await self._retry_after(waiting),
            )
        self._deadlines[job.id] = job.deadline

    async def events(self, job_id: str) -> AsyncIterator[list[JobEvent]]:
        deadline = self._deadlines.pop(job_id, time.time() + self.result_ttl)
        finished = False
        try:
            while True:
                remaining = deadline - time.time()
                batch = await self._inbox.next_batch(job_id, remaining)
                if batch is None:
                    if remaining <= 0:
                        yield [DEADLINE_PASSED]
                        return
                    continue
                for i, event in enumerate(batch):
                    if is_terminal(event):
                        finished = event is not DEADLINE_PASSED and event is not UNAVAILABLE
                        yield batch[: i + 1]
                        return
                yield batch
        finally:
            self._inbox.close(job_id)
            if not finished:
                with contextlib.suppress(RedisError):
                    await self.cancel(job_id)

    async def cancel(self, job_id: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.cancel_flag(job_id), b"1", ex=self.result_ttl)
                pipe.publish(keys.CANCEL_CHANNEL, job_id)
                await pipe.execute()
        except RedisError:
            log.warning("could not cancel job %s: Redis unavailable", job_id)

    # worker side

    async def take(self, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        try:
            await self._ensure_groups()
            self._cancels.start()
            # No cancel message may be missed once we run a job.
            await asyncio.wait_for(self._cancels.subscribed.wait(), max(timeout, 1.0))
            while True:
                reply = await self._take_entry()
                if reply is not None:
                    job = await self._deliver(*reply)
                    if job is not None:
                        return job
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                # A token per submit; one idle worker wakes and re-runs the pick.
                await self.redis.blpop(
                    [keys.wake(self.model)], timeout=max(0.01, min(remaining, 1))
                )
        except (RedisError, TimeoutError) as exc:
            self._groups_ready = False  # a restarted Redis may have lost them
            raise errors.NotReady("The queue is unavailable.") from exc

    async def publish(self, job_id: str, event: JobEvent) -> None:
        await self._publisher.publish(self._reply_to[job_id], job_id, event)

    async def complete(self, job_id: str) -> None:
        where = self._inflight.pop(job_id, None)
        self._reply_to.pop(job_id, None)
        self._cancels.forget(job_id)
        if where is None:
            return
        stream, entry_id = where
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, keys.GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            pipe.delete(keys.tries(job_id))
            pipe.incr(keys.done_counter(self.model))
            await pipe.execute()

    def on_cancel(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        return self._cancels.on_cancel(job_id, callback)

    async def heartbeat(self) -> None:
        """Mark this worker alive and keep its in-flight entries from being reclaimed."""
        now = time.time()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.workers(self.model), {self.worker_id: now})
                pipe.zremrangebyscore(keys.workers(self.model), 0, now - 3600)
                for stream, entry_id in self._inflight.values():
                    pipe.xclaim(stream, keys.GROUP, self.worker_id, 0, [entry_id], justid=True)
                await pipe.execute()
        except RedisError as exc:
            raise errors.NotReady("The queue is unavailable.") from exc

    async def leave(self) -> None:
        """Remove this worker's heartbeat (clean shutdown)."""
        with contextlib.suppress(RedisError):
            await self.redis.zrem(keys.workers(self.model), self.worker_id)

    # observation

    async def depths(self) -> dict[Lane, int]:
        try:
            return {
                lane: await self._waiting(stream)
                for lane, stream in zip(LANE_ORDER, self._streams, strict=True)
            }
        except RedisError:
            return dict.fromkeys(LANE_ORDER, 0)

    async def oldest_ages(self) -> dict[Lane, float]:
        """Seconds the oldest waiting job of each lane has waited (0 when none)."""
        now, ages = time.time(), {}
        for lane, stream in zip(LANE_ORDER, self._streams, strict=True):
            head = await self._next_undelivered(stream)
            ages[lane] = max(0.0, now - float(head[1][b"t"])) if head else 0.0
        return ages

    async def live_workers(self, max_age: float | None = None) -> int:
        fresh = time.time() - (max_age or 3 * self.heartbeat_interval + 2)
        return await self.redis.zcount(keys.workers(self.model), fresh, "+inf")

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._inbox.stop()
        self._cancels.stop()
        self._publisher.stop()
        with contextlib.suppress(RedisError):
            await self.redis.aclose()

    # internals

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in self._streams:
            try:
                await self.redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def _waiting(self, stream: str) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xpending(stream, keys.GROUP)
            length, pending = await pipe.execute()
        return max(0, length - pending["pending"])

    async def _next_undelivered(self, stream: str) -> tuple[bytes, dict[bytes, bytes]] | None:
        groups = await self.redis.xinfo_groups(stream)
        last = next(
            (g["last-delivered-id"] for g in groups if g["name"] == keys.GROUP.encode()), b"0-0"
        )
        entries = await self.redis.xrange(stream, b"(" + last, "+", count=1)
        return entries[0] if entries else None

    async def _retry_after(self, waiting: int) -> int:
        """From the cluster-wide completion counter, sampled across calls."""
        now, done = time.monotonic(), int(await self.redis.get(keys.done_counter(self.model)) or 0)
        if self._done_sample is not None and now - self._done_sample[0] >= 1.0:
            rate = (done - self._done_sample[1]) / (now - self._done_sample[0])
            self._drain_per_second = 0.5 * self._drain_per_second + 0.5 * rate
            self._done_sample = (now, done)
        elif self._done_sample is None:
            self._done_sample = (now, done)
        if self._drain_per_second <= 0:
            return 5
        return min(max(1, math.ceil(waiting / self._drain_per_second)), 60)

    async def _take_entry(self) -> list[Any] | None:
        """One TAKE_SCRIPT call; reclaiming first about once per heartbeat interval."""
        now = time.monotonic()
        reclaim_idle_ms = 0
        if now - self._last_reclaim >= self.heartbeat_interval:
            self._last_reclaim = now
            reclaim_idle_ms = int(self.visibility_timeout * 1000)
        args = [repr(time.time()), repr(self.aging_seconds), keys.GROUP, self.worker_id]
        return await self._take(
            keys=self._streams,
            args=[*args, reclaim_idle_ms, self.result_ttl, keys.PREFIX],
        )

    async def _deliver(
        self,
        stream: bytes,
        entry_id: bytes,
        document_bytes: bytes,
        reply_to: bytes,
        tries: int,
        cancelled: int,
        reclaimed: int,
        images: list[bytes | None],
    ) -> Job | None:
        """Checks on a delivered entry; the job to run, or None when it must not run."""
        if reclaimed:
            self.redeliveries += 1
            if self.metrics is not None:
                self.metrics.redeliveries.inc()
        document = document_bytes.decode()
        raw = json.loads(document)
        job_id = raw["id"]
        self._inflight[job_id] = (stream.decode(), entry_id)
        self._reply_to[job_id] = reply_to.decode()
        failure: JobFailed | None = None
        if cancelled:
            await self.complete(job_id)
            return None
        if raw["deadline"] <= time.time():
            failure = JobFailed("DeadlineExceeded", "The request expired while queued.")
        elif tries > self.max_deliveries:
            self.dead_lettered += 1
            if self.metrics is not None:
                self.metrics.dead_letters.inc()
            await self.redis.xadd(
                keys.dead_letters(self.model), {"job": document, "tries": str(tries - 1)}
            )
            failure = JobFailed(
                "EngineError", f"The request failed on {tries - 1} workers.", code="dead_letter"
            )
        if failure is not None:
            await self.publish(job_id, failure)
            await self.complete(job_id)
            return None
        if any(data is None for data in images):
            await self.publish(job_id, JobFailed("NotReady", "The request's images expired."))
            await self.complete(job_id)
            return None
        if tries > 1:
            await self.publish(job_id, Restarted(tries))
        return decode_job(document, images)  # type: ignore[arg-type]  # None checked above
