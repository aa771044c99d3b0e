"""The shared connection against a real redis-server: many callers each get their own
reply, errors stay with their call, a lost or silent connection fails the waiting
calls and the next call reconnects, a cancelled caller does not shift the replies,
TLS works through it."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import signal
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from service.processes import RedisServer, free_port
from service.redis.connection import answers, connect
from service.redis.multiplexed import LuaScript, MultiplexedRedis

ECHO_ARGV = LuaScript("return ARGV")
BUSY = LuaScript(  # holds the server for ARGV[1] microseconds
    "local s = redis.call('TIME') local start = s[1] * 1000000 + s[2] "
    "repeat local t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) "
    "return 1"
)


@pytest.fixture
async def shared(redis_server):
    client = connect(redis_server.url)
    await client.flushdb()
    await client.script_flush()
    mux = MultiplexedRedis(client)
    yield mux, client
    await mux.close()
    await client.aclose()


async def test_concurrent_callers_each_get_their_own_reply(shared):
    mux, _ = shared

    async def caller(n: int) -> list[object]:
        replies = []
        for i in range(20):
            replies.append(await mux.execute("INCRBY", f"counter:{n}", i))
            replies.append(await mux.evalsha(ECHO_ARGV, [], [n, i, b"x" * n]))
        return replies

    results = await asyncio.gather(*(caller(n) for n in range(50)))
    for n, replies in enumerate(results):
        counts, echoes = replies[0::2], replies[1::2]
        assert counts == [sum(range(i + 1)) for i in range(20)]
        assert echoes == [[str(n).encode(), str(i).encode(), b"x" * n] for i in range(20)]


async def test_a_pipeline_answers_in_order_and_an_error_stays_with_its_call(shared):
    mux, _ = shared
    replies = await mux.pipeline([("SET", "a", 1), ("INCR", "a"), ("GET", "a")])
    assert replies == [b"OK", 2, b"2"]
    bad, good = await asyncio.gather(
        mux.execute("INCR", "a", "an argument too many"),
        mux.execute("GET", "a"),
        return_exceptions=True,
    )
    assert isinstance(bad, ResponseError) and good == b"2"
    with pytest.raises(ResponseError):
        await mux.pipeline([("SET", "b", 1), ("LPUSH", "b", 1)])  # WRONGTYPE
    assert await mux.execute("GET", "b") == b"1"  # the pipeline's other command ran


async def test_a_script_redis_lost_is_sent_again(shared):
    mux, client = shared
    with pytest.raises(NoScriptError):
        await mux.execute("EVALSHA", ECHO_ARGV.sha, 0, "x")
    assert await mux.evalsha(ECHO_ARGV, [], ["x"]) == [b"x"]  # sent whole, now cached
    assert await mux.execute("EVALSHA", ECHO_ARGV.sha, 0, "y") == [b"y"]
    await client.script_flush()
    assert await mux.evalsha(ECHO_ARGV, [], ["z"]) == [b"z"]


async def test_a_cancelled_caller_does_not_shift_the_replies(shared):
    mux, client = shared
    await client.set("k", "v")
    slow = asyncio.ensure_future(mux.evalsha(BUSY, [], [200_000]))
    await asyncio.sleep(0.05)
    follower = asyncio.ensure_future(mux.execute("GET", "k"))
    await asyncio.sleep(0.01)
    slow.cancel()
    assert await follower == b"v"


async def test_a_lost_connection_fails_its_calls_and_the_next_call_reconnects():
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url)
    mux = MultiplexedRedis(client)
    try:
        assert await mux.execute("PING") == b"PONG"
        busy = asyncio.ensure_future(mux.evalsha(BUSY, [], [2_000_000]))
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(mux.execute("PING"))
        await asyncio.sleep(0.05)
        server.process.kill()  # a restart: the connection is reset under both calls
        server.process.wait()
        for call in (busy, waiting):
            with pytest.raises(ConnectionError):
                await call
        server.start()  # the same port
        assert await mux.execute("PING") == b"PONG"
    finally:
        await mux.close()
        await client.aclose()
        server.stop()


async def test_a_silent_server_is_given_up_after_the_reply_timeout():
    server = RedisServer().start()
    client = aioredis.Redis.from_url(server.url)
    mux = MultiplexedRedis(client, reply_timeout=0.5)
    try:
        assert await mux.execute("PING") == b"PONG"
        os.kill(server.process.pid, signal.SIGSTOP)  # a partition: no reply, no FIN
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionError):
                await mux.execute("PING")
            assert asyncio.get_running_loop().time() - started < 3
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await mux.execute("PING") == b"PONG"
    finally:
        await mux.close()
        await client.aclose()
        server.stop()


async def test_a_read_only_replica_makes_it_find_the_primary_again(redis_server):
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(redis_server.port))).start()
    client = aioredis.Redis.from_url(replica.url)
    mux = MultiplexedRedis(client)
    try:
        with pytest.raises(ConnectionError):
            await mux.execute("SET", "k", "v")
        assert mux._reader is not None and mux._reader.closed
        assert await mux.execute("PING") == b"PONG"  # a new connection
    finally:
        await mux.close()
        await client.aclose()
        replica.stop()


async def test_payloads_larger_than_the_socket_buffers_arrive_whole(shared):
    mux, _ = shared  # the transport pauses the writers; nobody's bytes interleave
    values = [bytes([n]) * (4 << 20) for n in range(8)]
    await asyncio.gather(*(mux.execute("SET", f"big:{n}", v) for n, v in enumerate(values)))
    assert await asyncio.gather(*(mux.execute("GET", f"big:{n}") for n in range(8))) == values


async def test_a_cancelled_blocking_call_never_runs_what_was_pipelined_behind_it(redis_server):
    client = connect(redis_server.url)
    await client.delete("wake", "taken")
    waits = MultiplexedRedis(client, blocking=True)
    try:
        wait = asyncio.ensure_future(
            waits.pipeline([("BLPOP", "wake", 5), ("INCR", "taken")])  # a wait, then a take
        )
        await asyncio.sleep(0.1)
        wait.cancel()
        await asyncio.sleep(0.1)
        await client.lpush("wake", 1)  # the submit the cancelled wait was waiting for
        await asyncio.sleep(0.2)
        assert await client.get("taken") is None  # nothing taken for a caller who left
        assert await client.llen("wake") == 1  # the token is still there for another
        assert await waits.execute("PING") == b"PONG"  # and the next call reconnects
    finally:
        await waits.close()
        await client.aclose()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_tls_connection_is_shared_too(tmp_path, loop):
    """`rediss://`: the client's pool does the TLS handshake, the shared connection
    then reads and writes through the TLS transport (asyncio's and uvloop's)."""
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"

    async def check() -> None:
        client = aioredis.Redis.from_url(url)
        for _ in range(100):  # until the server listens
            if await answers(client):
                break
            await asyncio.sleep(0.05)
        mux = MultiplexedRedis(client)
        try:
            value = b"x" * 300_000  # several TLS records
            assert await mux.pipeline([("SET", "k", value), ("GET", "k")]) == [b"OK", value]
            assert await mux.evalsha(ECHO_ARGV, [], ["tls"]) == [b"tls"]
        finally:
            await mux.close()
            await client.aclose()

    try:
        (uvloop.run if loop == "uvloop" else asyncio.run)(check())
    finally:
        server.kill()
        server.wait()
