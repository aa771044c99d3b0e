"""Noticing that an HTTP client went away, so its work is cancelled at once.

One listener task per request waits for `http.disconnect` (after the body is
read, it is the only message `receive` can deliver). Work that should stop
when the client leaves runs inside `guard()` in the request's own task; on
disconnect the listener cancels that task, and the guard turns the
cancellation into `errors.Cancelled`. No task per guarded step: this is on
every request's path.

Why the cancel cannot land outside the guard: the listener only runs while the
guarded task is suspended, and `guard()` clears its target synchronously on
exit, so a target that is set is always a task suspended inside the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from starlette.types import Receive

from service import errors


class ClientWatch:
    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._target: asyncio.Task[object] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.gone = False

    def start(self) -> ClientWatch:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        return self

    def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._target is not None:
            self._target.cancel()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run the body until it ends or the client disconnects (`errors.Cancelled`)."""
        if self.gone:
            raise errors.Cancelled("The client closed the connection.")
        task = asyncio.current_task()
        assert task is not None
        self._target = task
        try:
            yield
        except asyncio.CancelledError:
            if not self.gone:
                raise  # cancelled for another reason (server shutdown)
            task.uncancel()
            raise errors.Cancelled("The client closed the connection.") from None
        finally:
            self._target = None
