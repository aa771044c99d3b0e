"""The Redis queue: gateways and workers as separate processes, at-least-once.

Semantics are those of `service.queue.protocols`, plus what crossing processes
needs (every key is listed in `keys`). `RedisGatewayQueue` (this module) is the
gateway's side, `RedisWorkerQueue` (`worker_queue`) the worker's:

- Submit (one Lua call, `ADMIT_SCRIPT`): admission counts the lane's *waiting*
  jobs (stream length minus entries delivered and not yet acked) against
  `max_depth`; the job document goes into the lane's stream with the gateway's
  inbox as its reply-to, each image once under its content hash (TTL), and a
  token is pushed on the model's wake list.
- Take (one Lua call, `TAKE_SCRIPT`): the next undelivered entry of every lane,
  the best by `lanes.effective_rank` (aging), delivered with XREADGROUP,
  atomically, so concurrent workers never race for the same head; the same call
  counts the delivery, reads the cancel flag and returns the images, and does
  so again for up to the worker's free slots (`take_many`). With
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
- Models: a job goes to the lanes of its own model (`job.model`); one gateway
  serves every model some worker announces (`models()`, from the registry the
  heartbeats keep).
- Results: the worker appends events, tagged with the job id, to the inbox
  stream of the gateway that submitted the job (`inbox`); the gateway
  reads its inbox with one blocking XREAD for all its requests, each bounded by
  its job's deadline (at which it reads the inbox once more, so what a worker
  wrote in time is not lost to the reader's timing). Inboxes, cancel flags,
  delivery counters and images all expire (`result_ttl`).
- Cancel: a flag (checked when a job is taken, so queued jobs never run) and a
  pub/sub message (so a running job's worker aborts at once).
- Ack: XACK + XDEL on completion, so a lane's length is waiting + running.
- Connections: the commands Redis answers at once (admit, take, flushes) share
  one connection per process side (`multiplexed`); the blocking inbox read and
  wake wait have one each; the rest uses redis-py's pool.
- Redis lost (a restart, a Sentinel failover; docs/operations.md): admission is
  503 `not_ready` with Retry-After while no primary answers. A job this gateway
  is waiting on is resubmitted under a new attempt id once a different server
  answers (a new run id: `inbox`, `_resubmit`): asynchronous replication may
  have lost it, or its events, with the old primary. A read that failed or
  timed out against the same server (a broken connection, a starved process)
  loses nothing and resubmits nothing. A reader sees `Restarted`: a collecting reader starts over,
  a stream that already sent text ends with the retriable `worker_lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from service import errors
from service.core.jobs import DEADLINE_PASSED, Job, JobEvent, Restarted, is_terminal
from service.core.lanes import LANE_ORDER, Lane
from service.queue.protocols import KNOWN_FOR, ModelSeen
from service.redis import keys
from service.redis.codec import encode_job
from service.redis.connection import answers, close_quietly, connect, unavailable
from service.redis.inbox import UNAVAILABLE, GatewayInbox
from service.redis.multiplexed import LuaScript, MultiplexedRedis
from service.redis.scripts import ADMIT_SCRIPT
from service.redis.streams import LaneStreams

log = logging.getLogger("gmaivl.queue")

RECONNECT_INTERVAL = 0.2  # seconds between checks for a primary after Redis failed
PRUNE_ABOVE = 1024  # submitted jobs kept for resubmission before expired ones are dropped


class RedisGatewayQueue:
    def __init__(
        self,
        url: str,
        *,
        model: str,
        max_depth: int = 256,
        heartbeat_interval: float = 1.0,
        result_ttl: int = 600,
        max_connections: int = 4096,
    ) -> None:
        # The pool serves the rare commands; requests share `self.shared` (see `multiplexed`).
        self.redis = connect(url, max_connections=max_connections)
        self.shared = MultiplexedRedis(self.redis)  # admission: see `multiplexed`
        self.model = model
        self.max_depth = max_depth
        self.heartbeat_interval = heartbeat_interval
        self.result_ttl = result_ttl
        self._streams: dict[str, LaneStreams] = {}
        self._admit = LuaScript(ADMIT_SCRIPT)
        self._inbox = GatewayInbox(self.redis, self.shared, result_ttl)
        self._jobs: dict[str, Job] = {}  # submitted here, until their events are read
        self._current: dict[str, str] = {}  # job id -> its resubmitted attempt's id
        self.resubmitted = 0
        self._done_samples: dict[str, tuple[float, int]] = {}
        self._drain_per_second: dict[str, float] = {}

    def _lanes(self, model: str) -> LaneStreams:
        streams = self._streams.get(model)
        if streams is None:  # models are few: the ids the gateway checked as known
            streams = self._streams[model] = LaneStreams(self.redis, model)
        return streams

    async def submit(self, job: Job) -> None:
        images = job.request.images
        refs = [hashlib.sha256(image.rgb).hexdigest() for image in images]
        streams = self._lanes(job.model)
        self._inbox.open(job.id)
        try:
            await streams.ensure_groups()
            waiting = await self.shared.evalsha(
                self._admit,
                [
                    keys.lane_stream(job.model, job.lane),
                    keys.wake(job.model),
                    *(keys.image(ref) for ref in refs),
                ],
                [
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
            streams.forget_groups()
            log.warning("submit failed: %s", type(exc).__name__)
            raise errors.NotReady("The queue is unavailable; retry later.", retry_after=1) from exc
        if waiting >= 0:
            self._inbox.close(job.id)
            raise errors.Overloaded(
                f"The {job.lane.value} queue is full; retry later.",
                retry_after=await self._retry_after(job.model, waiting),
            )
        self._jobs[job.id] = job
        if len(self._jobs) > PRUNE_ABOVE:  # event streams never read: drop the expired
            now = time.time()
            for stale in [k for k, j in self._jobs.items() if j.deadline < now]:
                del self._jobs[stale]

    async def events(self, job_id: str) -> AsyncIterator[list[JobEvent]]:
        job = self._jobs.pop(job_id, None)
        deadline = job.deadline if job is not None else time.time() + self.result_ttl
        current = job_id  # the attempt whose events are read (see `_resubmit`)
        finished = False
        try:
            while True:
                remaining = deadline - time.time()
                batch = await self._inbox.next_batch(current, remaining)
                if batch is None and remaining <= 0:
                    batch = await self._inbox.last_look(current)
                    if batch is None:
                        yield [DEADLINE_PASSED]
                        return
                if batch is None:
                    continue
                out: list[JobEvent] = []
                for event in batch:
                    if event is UNAVAILABLE and job is not None:
                        # The primary went away: what it held may be lost (failover).
                        if out:
                            yield out
                        resubmitted = await self._resubmit(job, current, deadline)
                        if resubmitted is None:
                            yield [DEADLINE_PASSED]
                            return
                        current = resubmitted
                        out = [Restarted(0)]
                        break  # the rest of the batch belongs to the old attempt
                    out.append(event)
                    if is_terminal(event):
                        finished = event is not DEADLINE_PASSED and event is not UNAVAILABLE
                        yield out
                        return
                yield out
        finally:
            self._inbox.close(current)
            self._current.pop(job_id, None)
            if not finished:
                with contextlib.suppress(RedisError):
                    await self._cancel_attempt(current)

    async def _resubmit(self, job: Job, old: str, deadline: float) -> str | None:
        """After Redis failed under a waiting job: once a primary answers again, submit
        the job anew under a new attempt id and cancel the old attempt. The gateway
        cannot tell a job the new primary lost (asynchronous replication) from one it
        kept, so it resubmits both; the cancel stops the old attempt where it
        survived, so a job's answer is read once and at most one attempt runs on.
        Returns the new attempt's id, or None when the deadline passes first."""
        self._inbox.close(old)
        while time.time() < deadline:
            if await self.ping():
                attempt = uuid.uuid4().hex
                retry = dataclasses.replace(
                    job,
                    id=attempt,
                    request=dataclasses.replace(job.request, request_id=attempt),
                )
                try:
                    await self.submit(retry)
                except errors.NotReady:
                    await asyncio.sleep(RECONNECT_INTERVAL)
                    continue
                self._jobs.pop(attempt, None)
                self._current[job.id] = attempt
                self.resubmitted += 1
                await self._cancel_attempt(old)
                log.info("job resubmitted after a Redis failure")
                return attempt
            await asyncio.sleep(RECONNECT_INTERVAL)
        return None

    async def cancel(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        await self._cancel_attempt(self._current.get(job_id, job_id))  # its latest attempt

    async def _cancel_attempt(self, job_id: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.cancel_flag(job_id), b"1", ex=self.result_ttl)
                pipe.publish(keys.CANCEL_CHANNEL, job_id)
                await pipe.execute()
        except RedisError:
            log.warning("could not cancel job %s: Redis unavailable", job_id)

    # observation

    async def depths(self, model: str | None = None) -> dict[Lane, int]:
        streams = self._lanes(model or self.model)
        try:
            return {lane: await streams.waiting(lane) for lane in LANE_ORDER}
        except RedisError:
            return dict.fromkeys(LANE_ORDER, 0)

    async def oldest_ages(self, model: str | None = None) -> dict[Lane, float]:
        """Seconds the oldest waiting job of each lane has waited (0 when none)."""
        streams = self._lanes(model or self.model)
        now, ages = time.time(), {}
        try:
            for lane in LANE_ORDER:
                head = await streams.next_undelivered(lane)
                ages[lane] = max(0.0, now - float(head[1][b"t"])) if head else 0.0
        except RedisError:
            return dict.fromkeys(LANE_ORDER, 0.0)
        return ages

    async def live_workers(self, model: str | None = None) -> int:
        """Workers of the model whose heartbeat is fresh (0 when Redis does not answer)."""
        try:
            return await self.redis.zcount(
                keys.workers(model or self.model), self._fresh_since(), "+inf"
            )
        except RedisError:
            return 0

    async def models(self) -> list[ModelSeen]:
        """Model ids announced within `KNOWN_FOR` seconds; `errors.NotReady` when Redis
        does not answer (not "no models": the catalog keeps the last known set)."""
        with unavailable("The model registry is unavailable.", retry_after=1):
            seen = await self.redis.zrangebyscore(
                keys.MODELS, time.time() - KNOWN_FOR, "+inf", withscores=True
            )
            ids = [member.decode() for member, _ in seen]
            if not ids:
                return []
            fresh = self._fresh_since()
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.PARENTS, ids)
                for model in ids:
                    pipe.zcount(keys.workers(model), fresh, "+inf")
                parents, *live = await pipe.execute()
        return [
            ModelSeen(model, (parent or b"").decode() or None, count, last)
            for (model, (_, last), parent, count) in zip(ids, seen, parents, live, strict=True)
        ]

    def _fresh_since(self) -> float:
        return time.time() - (3 * self.heartbeat_interval + 2)

    async def ping(self) -> bool:
        return await answers(self.redis)

    async def close(self) -> None:
        await self._inbox.stop()
        await self.shared.close()
        await close_quietly(self.redis)

    async def _retry_after(self, model: str, waiting: int) -> int:
        """From the model's cluster-wide completion counter, sampled across calls."""
        now, done = time.monotonic(), int(await self.redis.get(keys.done_counter(model)) or 0)
        sample = self._done_samples.get(model)
        rate = self._drain_per_second.get(model, 0.0)
        if sample is not None and now - sample[0] >= 1.0:
            measured = (done - sample[1]) / (now - sample[0])
            rate = self._drain_per_second[model] = 0.5 * rate + 0.5 * measured
            self._done_samples[model] = (now, done)
        elif sample is None:
            self._done_samples[model] = (now, done)
        if rate <= 0:
            return 5
        return min(max(1, math.ceil(waiting / rate)), 60)
