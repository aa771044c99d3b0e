"""The worker's side of the Redis queue: take (with reclaim, delivery counting and
dead letters), publish to the submitting gateway's inbox, acknowledge, cancel
callbacks, heartbeat. Semantics: `gateway_queue` and `service.queue.protocols`.

A worker serves one base model and, over it, its LoRA adapters, each a model id
of its own with its own lanes; one take call looks at the lanes of them all
(aging compares heads across models too). The heartbeat announces every id (with
its parent) in the model registry that gateways list `/v1/models` from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from service import errors
from service.core.jobs import Job, JobEvent, JobFailed, Restarted
from service.metrics import ServiceMetrics
from service.redis import keys
from service.redis.codec import job_from, parse_job
from service.redis.connection import answers, close_quietly, connect, unavailable
from service.redis.multiplexed import LuaScript, MultiplexedRedis
from service.redis.scripts import TAKE_SCRIPT
from service.redis.streams import LaneStreams
from service.redis.worker_io import FLUSH_INTERVAL, CancelListener, InboxPublisher

log = logging.getLogger("gmaivl.queue")

BLOCKING_SLACK = 2.0  # seconds a blocking wait may run past its own timeout (at most 1 s)


class RedisWorkerQueue:
    def __init__(
        self,
        url: str,
        *,
        model: str,
        adapters: Sequence[str] = (),
        aging_seconds: float = 10.0,
        visibility_timeout: float = 15.0,
        heartbeat_interval: float = 1.0,
        max_deliveries: int = 3,
        result_ttl: int = 600,
        flush_interval: float = FLUSH_INTERVAL,
        worker_id: str | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.redis = connect(url)
        self.shared = MultiplexedRedis(self.redis)  # take and publish: see `multiplexed`
        # An idle worker's wait for a submit (blocking) has a connection of its own; a
        # wait that gets no answer within its bound gives the connection up.
        self._waits = MultiplexedRedis(self.redis, reply_timeout=1 + BLOCKING_SLACK, blocking=True)
        self.model = model
        self.adapters = list(adapters)
        self.models = [model, *self.adapters]
        self.aging_seconds = aging_seconds
        self.visibility_timeout = visibility_timeout
        self.heartbeat_interval = heartbeat_interval
        self.max_deliveries = max_deliveries
        self.result_ttl = result_ttl
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._streams = [LaneStreams(self.redis, m) for m in self.models]
        self._stream_keys = [key for streams in self._streams for key in streams.keys]
        self._ranks = [lane.rank for streams in self._streams for lane in streams.by_lane]
        self._model_of_stream = {
            key: streams.model for streams in self._streams for key in streams.keys
        }
        self._take = LuaScript(TAKE_SCRIPT)
        self._inflight: dict[str, tuple[str, bytes]] = {}  # job -> (stream, entry id)
        self._reply_to: dict[str, str] = {}  # job -> its gateway's inbox
        self._publisher = InboxPublisher(self.shared, result_ttl, flush_interval)
        self._cancels = CancelListener(self.redis, in_flight=lambda: list(self._inflight))
        self._last_reclaim = 0.0
        self._wake_keys = [keys.wake(m) for m in self.models]
        self._wake_of_stream = [
            keys.wake(streams.model) for streams in self._streams for _ in streams.keys
        ]
        self._nothing_waiting = False  # the last take found no other entry waiting
        self.redeliveries = 0
        self.dead_lettered = 0

    async def take(self, timeout: float) -> Job | None:
        jobs = await self.take_many(timeout, 1)
        return jobs[0] if jobs else None

    async def take_many(self, timeout: float, limit: int) -> list[Job]:
        deadline = time.monotonic() + timeout
        try:
            for streams in self._streams:
                await streams.ensure_groups()
            self._cancels.start()
            if not self._cancels.subscribed.is_set():  # no cancel may be missed once we run a job
                await asyncio.wait_for(self._cancels.subscribed.wait(), max(timeout, 1.0))
            while True:
                if self._nothing_waiting and deadline > time.monotonic():
                    # The last take said nothing else was waiting: wait for a submit.
                    reply = await self._take_after_submit(deadline, limit)
                else:
                    reply = await self._take_entries(pop_wake=True, limit=limit)
                self._nothing_waiting = reply is None or not reply[0]
                if reply is not None:
                    jobs = await self._deliver_all(reply[1:])
                    if jobs:
                        return jobs
                    continue
                if deadline - time.monotonic() <= 0:
                    return []
        except (RedisError, TimeoutError) as exc:
            for streams in self._streams:
                streams.forget_groups()
            self._nothing_waiting = False  # tokens may be lost with Redis: look first
            raise errors.NotReady("The queue is unavailable.") from exc

    async def _take_after_submit(self, deadline: float, limit: int) -> list[Any] | None:
        """Block on the wake lists (a token per submitted, undelivered job; one idle
        worker wakes), then take, in one round trip: the take follows the BLPOP in the
        same pipeline, so Redis runs it as soon as the BLPOP returns. The take is told
        the token was popped; when the BLPOP timed out instead and the take still
        delivers (a submit landed in between), that job's token stays behind and
        wakes a worker once for nothing."""
        wait = max(0.01, min(deadline - time.monotonic(), 1))
        call = self._take_call(pop_wake=False, limit=limit)
        try:
            _, reply = await self._waits.pipeline(
                [
                    ("BLPOP", *self._wake_keys, wait),
                    ("EVALSHA", self._take.sha, len(self._stream_keys), *call),
                ]
            )
        except NoScriptError:  # a Redis that lost its scripts: the call loads it
            return await self._take_entries(pop_wake=False, limit=limit)
        return reply

    async def _deliver_all(self, deliveries: list[list[Any]]) -> list[Job]:
        """The jobs to run among a take's deliveries. One whose checks fail on Redis
        does not lose the others: they are returned, or, with none to return, the
        error is raised."""
        jobs: list[Job] = []
        error: Exception | None = None
        for delivery in deliveries:
            try:
                job = await self._deliver(*delivery)
            except (RedisError, errors.NotReady) as exc:
                error = error or exc
                continue
            if job is not None:
                jobs.append(job)
        if error is not None and not jobs:
            raise error
        return jobs

    async def publish(self, job_id: str, event: JobEvent) -> None:
        reply_to = self._reply_to.get(job_id)
        if reply_to is None:
            raise errors.NotReady("The job was given up after the queue failed.")
        try:
            await self._publisher.publish(reply_to, job_id, event)
        except errors.NotReady:
            # Redis failed under the job. Its gateway resubmits it if another server
            # answers now (a restart, a failover) and sets the old one's cancel flag.
            # Stop claiming the old entry, so that where it survived it is reclaimed
            # (run again, or dropped when cancelled), not held by our heartbeat forever.
            self._give_up(job_id)
            raise

    def _give_up(self, job_id: str) -> None:
        self._inflight.pop(job_id, None)
        self._reply_to.pop(job_id, None)
        self._cancels.forget(job_id)
        self._publisher.forget(job_id)

    async def complete(self, job_id: str) -> None:
        where = self._inflight.get(job_id)
        if where is None:
            self._give_up(job_id)
            return
        stream, entry_id = where
        done_counter = keys.done_counter(self._model_of_stream.get(stream, self.model))
        ack = [
            ("XACK", stream, keys.GROUP, entry_id),
            ("XDEL", stream, entry_id),
            ("DEL", keys.tries(job_id)),
            ("INCR", done_counter),
        ]
        # With the job's last events' flush (after them): no round trip of its own.
        # A failed flush of its events stops it (NotReady): not acknowledged.
        try:
            await self._publisher.also(job_id, ack)
        finally:
            self._give_up(job_id)

    def on_cancel(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        return self._cancels.on_cancel(job_id, callback)

    async def heartbeat(self) -> None:
        """Mark this worker alive for each model id it serves (and announce the ids),
        and keep its in-flight entries from being reclaimed."""
        now = time.time()
        with unavailable("The queue is unavailable."):
            async with self.redis.pipeline(transaction=False) as pipe:
                for model in self.models:
                    pipe.zadd(keys.workers(model), {self.worker_id: now})
                    pipe.zremrangebyscore(keys.workers(model), 0, now - 3600)
                    pipe.zadd(keys.MODELS, {model: now})
                pipe.hset(
                    keys.PARENTS,
                    mapping={m: (self.model if m != self.model else "") for m in self.models},
                )
                entries_by_stream: dict[str, list[bytes]] = {}
                for stream, entry_id in self._inflight.values():
                    entries_by_stream.setdefault(stream, []).append(entry_id)
                for stream, entry_ids in entries_by_stream.items():  # one XCLAIM per stream
                    pipe.xclaim(stream, keys.GROUP, self.worker_id, 0, entry_ids, justid=True)
                await pipe.execute()

    async def leave(self) -> None:
        """Remove this worker's heartbeats (clean shutdown); the registry keeps the ids,
        so gateways answer `model_unavailable`, not 404, while no worker serves them."""
        with contextlib.suppress(RedisError):
            async with self.redis.pipeline(transaction=False) as pipe:
                for model in self.models:
                    pipe.zrem(keys.workers(model), self.worker_id)
                await pipe.execute()

    async def ping(self) -> bool:
        return await answers(self.redis)

    async def close(self) -> None:
        self._cancels.stop()
        self._publisher.stop()
        await self.shared.close()
        await self._waits.close()
        await close_quietly(self.redis)

    async def _take_entries(self, *, pop_wake: bool, limit: int) -> list[Any] | None:
        """One TAKE_SCRIPT call (it returns at once: on the shared connection)."""
        keys_and_args = self._take_call(pop_wake=pop_wake, limit=limit)
        n = len(self._stream_keys)
        return await self.shared.evalsha(self._take, keys_and_args[:n], keys_and_args[n:])

    def _take_call(self, *, pop_wake: bool, limit: int) -> list[Any]:
        """TAKE_SCRIPT's keys, then its arguments; reclaiming first about once per
        heartbeat interval."""
        now = time.monotonic()
        reclaim_idle_ms = 0
        if now - self._last_reclaim >= self.heartbeat_interval:
            self._last_reclaim = now
            reclaim_idle_ms = int(self.visibility_timeout * 1000)
        return [
            *self._stream_keys,
            repr(time.time()),
            repr(self.aging_seconds),
            keys.GROUP,
            self.worker_id,
            reclaim_idle_ms,
            self.result_ttl,
            keys.tries(""),
            keys.cancel_flag(""),
            keys.image(""),
            int(pop_wake),
            limit,
            *self._ranks,
            *self._wake_of_stream,
        ]

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
        raw = parse_job(document_bytes)  # once: the checks and the job both read it
        job_id = raw["id"]
        self._inflight[job_id] = (stream.decode(), entry_id)
        self._reply_to[job_id] = reply_to.decode()
        failure: JobFailed | None = None
        if cancelled:
            await self.complete(job_id)
            return None
        if raw["deadline"] <= time.time():
            failure = JobFailed("deadline_exceeded", "The request expired while queued.")
        elif tries > self.max_deliveries:
            self.dead_lettered += 1
            if self.metrics is not None:
                self.metrics.dead_letters.inc()
            model = self._model_of_stream.get(stream.decode(), self.model)
            try:
                await self.redis.xadd(
                    keys.dead_letters(model), {"job": document_bytes, "tries": str(tries - 1)}
                )
            except RedisError:
                self._give_up(job_id)  # not held by our heartbeat: reclaimed later
                raise
            failure = JobFailed("dead_letter", f"The request failed on {tries - 1} workers.")
        if failure is not None:
            await self.publish(job_id, failure)
            await self.complete(job_id)
            return None
        if any(data is None for data in images):
            await self.publish(job_id, JobFailed("not_ready", "The request's images expired."))
            await self.complete(job_id)
            return None
        if tries > 1:
            await self.publish(job_id, Restarted(tries))
        return job_from(raw, images)  # type: ignore[arg-type]  # None checked above
