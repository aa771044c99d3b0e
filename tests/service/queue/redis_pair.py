"""Both sides of the Redis queue behind one object, so the contract suite runs the
same tests over the in-process queue (one object by design) and Redis (two)."""

from __future__ import annotations

import dataclasses
from typing import Any

from service.core.jobs import Job
from service.redis.gateway_queue import RedisGatewayQueue
from service.redis.worker_queue import RedisWorkerQueue

GATEWAY_ONLY = {"events", "cancel", "depths", "oldest_ages", "live_workers"}
GATEWAY_ARGS = {"max_depth", "heartbeat_interval", "result_ttl"}
WORKER_ARGS = {
    "aging_seconds",
    "visibility_timeout",
    "heartbeat_interval",
    "max_deliveries",
    "result_ttl",
    "worker_id",
    "metrics",
}


class RedisQueuePair:
    def __init__(self, url: str, *, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - GATEWAY_ARGS - WORKER_ARGS
        assert not unknown, unknown
        self.gateway = RedisGatewayQueue(
            url, model=model, **{k: v for k, v in kwargs.items() if k in GATEWAY_ARGS}
        )
        self.worker = RedisWorkerQueue(
            url, model=model, **{k: v for k, v in kwargs.items() if k in WORKER_ARGS}
        )

    async def submit(self, job: Job) -> None:
        """The suite's jobs all name one model; each pair has its own (one shared Redis)."""
        await self.gateway.submit(dataclasses.replace(job, model=self.gateway.model))

    def __getattr__(self, name: str) -> Any:
        side = self.gateway if name in GATEWAY_ONLY or name == "_inbox" else self.worker
        return getattr(side, name)

    async def ping(self) -> bool:
        return await self.gateway.ping() and await self.worker.ping()

    async def close(self) -> None:
        await self.gateway.close()
        await self.worker.close()
