"""A Server-Sent Events response that stops its producer when the client leaves.

Starlette's StreamingResponse notices a disconnect only on ASGI < 2.4 servers,
and never closes the iterator itself. Here the iterator always runs under the
request's `ClientWatch` and is always closed, so the job behind it is cancelled
within one event loop turn of the client going away.

The response's start goes down the whole middleware chain; its body chunks go
to `scope[BODY_SEND]` when the gateway middleware left one there: the send
beneath the wrappers that only look at a response's start (our middleware's
and Starlette's two exception handlers'), which would otherwise each cost a
coroutine call per chunk of every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service import errors
from service.api.disconnect import ClientWatch

BODY_SEND = "gmaivl.body_send"  # scope key (api/middleware.py)


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[str, None],
        watch: ClientWatch,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.events = events
        self.watch = watch
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            send = scope.get(BODY_SEND, send)
            # The per-token loop runs in a task of its own: this coroutine sits a dozen
            # frames deep in the middleware stack, and every resume of a task walks its
            # whole stack. One extra task per stream saves that walk on every token.
            await asyncio.create_task(self._send_events(send))
        finally:
            self.watch.close()
            await self.events.aclose()

    async def _send_events(self, send: Send) -> None:
        with contextlib.suppress(errors.Cancelled, OSError), self.watch.guard():
            async for event in self.events:
                await send(
                    {"type": "http.response.body", "body": event.encode(), "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
