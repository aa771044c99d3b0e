"""Work a gateway runs in the background under a lease (study reads, background
responses). In Redis mode the gateway renews the lease of everything it runs, a
third of a lease apart; a gateway that stops renewing (it died) has its work
claimed by another (`claim_orphan` of the work's store), which runs it again.
An unreachable store is retried next round and said once in the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

log = logging.getLogger("gmaivl.leases")


class HasId(Protocol):
    id: str


W = TypeVar("W", bound=HasId)


class LeasedStore(Protocol[W]):
    async def renew(self, work_id: str, owner: str) -> None: ...

    async def claim_orphan(self, owner: str, stale_after: float) -> W | None: ...


async def sweep(
    store: LeasedStore[W],
    owner: str,
    lease: float,
    running: Callable[[], Iterable[str]],
    take_over: Callable[[W], Awaitable[None]],
    what: str,
) -> None:
    """Forever: renew what `running()` names, and `take_over` one orphan per round."""
    failing = False
    while True:
        await asyncio.sleep(lease / 3)
        try:
            for work_id in list(running()):
                await store.renew(work_id, owner)
            orphan = await store.claim_orphan(owner, lease)
        except Exception as exc:  # the store is away: try again next round, say so once
            if not failing:
                log.warning("%s store unreachable (%s); retrying", what, type(exc).__name__)
            failing = True
            continue
        if failing:
            log.info("%s store reachable again", what)
            failing = False
        if orphan is not None:
            log.info("%s %s taken over from a silent gateway", what, orphan.id)
            await take_over(orphan)


async def stop(tasks: Iterable[asyncio.Task[None] | None]) -> None:
    """Cancel the tasks and wait for them to end (their errors are theirs)."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
