"""One Redis connection that many tasks share, for the queue's per-request commands.

Why: through redis-py's client every command checks a connection out of the pool
and back, runs a retry wrapper and encodes each argument in Python. With 64 tasks
calling at once that is ~120 µs of this process's CPU per EVALSHA of the take
script on the 2-core test machine, against ~24 µs written on one shared
connection (docs/benchmarks.md). Each request sends a few such commands.

How: the client's own pool opens the connection (the same URL handling, AUTH,
SELECT, TLS and Sentinel primary discovery as every other connection of the
process); this module then reads and writes its transport itself. A caller packs
its command, or a pipeline of them, with hiredis and writes it at once, without
waiting for anybody; Redis answers in order, so one hiredis reader hands the
replies to the waiting callers first in, first out, as the bytes arrive.

- A shared connection carries only commands that Redis answers at once: a
  blocking one (BLPOP, XREAD BLOCK) would hold every caller behind it. Each
  blocking use gets a connection of its own (`blocking=True`, below).
- An error reply raises `ResponseError` (`NoScriptError` for NOSCRIPT) in its
  own call only; READONLY (a demoted primary) also drops the connection.
- A lost connection fails every waiting call with redis's `ConnectionError` (a
  `RedisError`, as the client raises); the next call opens a new one (after a
  failover, to the new primary).
- A connection on which a call has waited `reply_timeout` seconds without any
  reply arriving is taken for dead (a half-open connection after a partition)
  and dropped.
- A caller cancelled while waiting (its deadline) leaves; its reply is read
  and dropped, so the next caller still gets its own. On a connection made
  for blocking commands (`blocking=True`: one caller at a time) a cancelled
  call closes the connection instead, so Redis drops the blocked command and
  never runs what was pipelined behind it (a take after a BLPOP).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

REPLY_TIMEOUT = 10.0  # seconds without a reply while calls wait: the connection is dead
WATCH_INTERVAL = 1.0

Command = tuple[Any, ...]


class LuaScript:
    """A script run by its SHA1, sent whole only when Redis does not have it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class _Call:
    __slots__ = ("future", "remaining", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.remaining = count
        self.replies: list[Any] = []


class _ReplyReader(asyncio.Protocol):
    """The protocol of one connection: hands replies to calls in the order written."""

    def __init__(self, transport: asyncio.Transport, reply_timeout: float) -> None:
        self.transport = transport
        self.reply_timeout = reply_timeout
        self.loop = asyncio.get_running_loop()
        self.parser = hiredis.Reader()  # an error reply comes back as a ReplyError value
        self.calls: collections.deque[_Call] = collections.deque()
        self.closed = False
        self.progress = self.loop.time()  # the last reply, or the first call since
        self._writable: asyncio.Future[None] | None = None
        self._outgoing: list[bytes] = []  # written by the callers of this loop iteration
        self._watch = self.loop.call_later(WATCH_INTERVAL, self._check)

    def write(self, data: bytes, count: int) -> asyncio.Future[list[Any]]:
        if self.closed:
            raise ConnectionError("The Redis connection was closed.")
        if not self.calls:
            self.progress = self.loop.time()
        call = _Call(self.loop.create_future(), count)
        self.calls.append(call)
        if not self._outgoing:
            self.loop.call_soon(self._send)
        self._outgoing.append(data)
        return call.future

    def _send(self) -> None:
        """What this iteration's callers wrote, in one system call (they are costly)."""
        outgoing, self._outgoing = self._outgoing, []
        if not self.closed:
            self.transport.writelines(outgoing)

    async def writable(self) -> None:
        if self._writable is not None:  # the transport's buffer is full (big images)
            await asyncio.shield(self._writable)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        calls = self.calls
        try:
            while (reply := self.parser.gets()) is not False:
                call = calls[0]
                call.replies.append(reply)
                call.remaining -= 1
                if call.remaining == 0:
                    calls.popleft()
                    if not call.future.done():  # else: its caller was cancelled
                        call.future.set_result(call.replies)
        except (hiredis.ProtocolError, IndexError):  # a stream we cannot follow
            self.drop()
        self.progress = self.loop.time()

    def drop(self) -> None:
        """Close now: no call may be written on it any more."""
        self.closed = True
        self.transport.abort()  # connection_lost fails the waiting calls

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set_result(None)
            self._writable = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._watch.cancel()
        while self.calls:
            future = self.calls.popleft().future
            if not future.done():
                future.set_exception(ConnectionError("The Redis connection was lost."))
                future.exception()  # retrieved: a cancelled caller's is never awaited
        self.resume_writing()

    def _check(self) -> None:
        if self.calls and self.loop.time() - self.progress > self.reply_timeout:
            self.drop()
            return
        self._watch = self.loop.call_later(WATCH_INTERVAL, self._check)


class MultiplexedRedis:
    """`execute`, `pipeline` and `evalsha` on one shared connection of `client`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        reply_timeout: float = REPLY_TIMEOUT,
        blocking: bool = False,
    ) -> None:
        self.client = client
        self.reply_timeout = reply_timeout
        self.blocking = blocking
        self._reader: _ReplyReader | None = None
        self._connection: Any = None  # redis-py's, kept so its finalizer does not close ours
        self._connecting = asyncio.Lock()

    async def execute(self, *command: Any) -> Any:
        (reply,) = await self._send(hiredis.pack_command(command), 1)
        return self._checked(reply)

    async def pipeline(self, commands: list[Command]) -> list[Any]:
        """The replies of `commands`, sent at once; the first error reply is raised
        (after every reply was read)."""
        replies = await self._send(b"".join(map(hiredis.pack_command, commands)), len(commands))
        for reply in replies:
            self._checked(reply)
        return replies

    async def evalsha(self, script: LuaScript, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis, or the first call: EVAL caches it
            return await self.execute("EVAL", script.text, len(keys), *keys, *args)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.transport.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    async def _send(self, data: bytes, count: int) -> list[Any]:
        reader = self._reader
        if reader is None or reader.closed:
            reader = await self._connect()
        await reader.writable()
        try:
            return await reader.write(data, count)
        except asyncio.CancelledError:
            if self.blocking:
                reader.drop()
            raise

    def _checked(self, reply: Any) -> Any:
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise NoScriptError(message)
            if message.startswith("READONLY"):  # a replica now: find the primary again
                if self._reader is not None:
                    self._reader.drop()
                raise ConnectionError("The Redis server is a read-only replica.")
            raise ResponseError(message)
        return reply

    async def _connect(self) -> _ReplyReader:
        async with self._connecting:  # the callers that found it closed share one connect
            if self._reader is not None and not self._reader.closed:
                return self._reader
            await self.close()
            pool = self.client.connection_pool
            # RESP2, whatever the client speaks: replies are plain arrays, strings, ints.
            connection = pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})
            await connection.connect()
            transport = connection._writer.transport  # redis-py offers no public accessor
            reader = _ReplyReader(transport, self.reply_timeout)
            transport.set_protocol(reader)
            self._reader, self._connection = reader, connection
            return reader
