"""The event-stream response: its start goes down the middleware chain, its body
chunks to the send the gateway middleware left beneath the wrappers."""

from __future__ import annotations

import asyncio

from service.api.disconnect import ClientWatch
from service.api.sse import BODY_SEND, EventStreamResponse


async def events():
    yield "data: a\n\n"
    yield "data: b\n\n"


async def never_disconnects():
    await asyncio.Event().wait()


async def test_the_start_goes_down_the_chain_and_the_chunks_beneath_it():
    chain, beneath = [], []

    async def send_through_chain(message):
        chain.append(message)

    async def send_beneath(message):
        beneath.append(message)

    response = EventStreamResponse(events(), ClientWatch(never_disconnects).start())
    await response({"type": "http", BODY_SEND: send_beneath}, never_disconnects, send_through_chain)
    assert [m["type"] for m in chain] == ["http.response.start"]
    assert [m.get("body") for m in beneath] == [b"data: a\n\n", b"data: b\n\n", b""]
    assert beneath[-1]["more_body"] is False


async def test_without_the_middleware_everything_goes_down_the_chain():
    sent = []

    async def send(message):
        sent.append(message)

    response = EventStreamResponse(events(), ClientWatch(never_disconnects).start())
    await response({"type": "http"}, never_disconnects, send)
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 3
