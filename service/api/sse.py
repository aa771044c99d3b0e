"""A Server-Sent Events response that stops its producer when the client leaves.

Starlette's StreamingResponse notices a disconnect only on ASGI < 2.4 servers,
and never closes the iterator itself. Here the iterator is always run against a
disconnect listener and always closed, so the job behind it is cancelled within
one event loop turn of the client going away.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service import errors
from service.api.disconnect import disconnect_waiter, race_disconnect


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: Mapping[str, str] | None = None):
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            with contextlib.suppress(errors.Cancelled, OSError):
                await race_disconnect(self._send_all(send), disconnect_waiter(receive))
        finally:
            with contextlib.suppress(Exception):
                await self.events.aclose()  # type: ignore[attr-defined]

    async def _send_all(self, send: Send) -> None:
        async for event in self.events:
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
