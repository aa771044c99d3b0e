"""Noticing that an HTTP client went away, so its work can be cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.types import Receive

from service import errors

T = TypeVar("T")


def disconnect_waiter(receive: Receive) -> Callable[[], Awaitable[None]]:
    """An awaitable factory that returns once the client disconnects. Only valid after
    the request body has been read (then `receive` has nothing else to deliver)."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return wait


async def race_disconnect(work: Awaitable[T], disconnected: Callable[[], Awaitable[None]]) -> T:
    """Run `work` unless the client disconnects first; then cancel it and raise
    `errors.Cancelled`."""
    work_task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work_task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work_task.done():
            return work_task.result()
        raise errors.Cancelled("The client closed the connection.")
    finally:
        gone.cancel()
        if not work_task.done():
            work_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work_task
