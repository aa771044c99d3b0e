"""One way to open a Redis client, so every part of a process talks to Redis alike.

Two URL forms:

- `redis://[[user]:password@]host:port/db` (and `rediss://`, `unix://`): one server.
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/service/db[?options]`:
  Redis Sentinel. The client asks the Sentinels for the primary of `service`
  whenever it opens a connection, so after a failover every process finds the
  new primary by itself (connections to the old one fail, the next ones go to
  the promoted replica). The user and password are the data nodes'; options:
  `sentinel_password` (and `sentinel_username`) when the Sentinels require AUTH
  themselves, `ssl=true` for TLS to the data nodes.

Passwords are never logged; `describe_url` gives a URL fit for a log line.

Every user of a client (both queue sides, the tenant limits, the read store)
asks whether Redis answers with `answers`, closes with `close_quietly`, and turns
"Redis did not answer" into the retryable `errors.NotReady` with `unavailable`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from service import errors

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379

# Fail fast (2 s to connect), no silent retries, idle connections checked;
# blocking reads set their own timeouts.
CLIENT_OPTIONS: dict[str, object] = {
    "socket_connect_timeout": 2,
    "socket_timeout": None,
    "health_check_interval": 5,
    "retry_on_error": [],
}


@dataclass(frozen=True)
class SentinelUrl:
    hosts: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None
    ssl: bool


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a `redis+sentinel://` URL; ValueError (without the URL, which may
    hold a password) when it is malformed."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = None, None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = port, ""
        if not host:
            raise ValueError("a Sentinel URL needs host:port entries")
        try:
            hosts.append((host.strip("[]"), int(port) if port else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ValueError("a Sentinel port is not a number") from None
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL needs /SERVICE or /SERVICE/DB")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError("the database of a Sentinel URL is not a number") from None
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return SentinelUrl(
        hosts=hosts,
        service=unquote(path[0]),
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        ssl=options.get("ssl", "").lower() in {"1", "true", "yes"},
    )


def connect(url: str, *, max_connections: int | None = None) -> aioredis.Redis:
    """A client for `url` (a single server or a Sentinel-managed primary)."""
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return aioredis.Redis.from_url(url, max_connections=max_connections, **CLIENT_OPTIONS)  # type: ignore[arg-type]
    spec = parse_sentinel_url(url)
    sentinel_auth: dict[str, object] = {}
    if spec.sentinel_password is not None:
        sentinel_auth["password"] = spec.sentinel_password
    if spec.sentinel_username is not None:
        sentinel_auth["username"] = spec.sentinel_username
    sentinel = Sentinel(
        spec.hosts,
        # Sentinels answer at once or not at all: a dead one costs 0.5 s, then the next.
        sentinel_kwargs={"socket_connect_timeout": 0.5, "socket_timeout": 0.5, **sentinel_auth},
    )
    options: dict[str, object] = dict(CLIENT_OPTIONS)
    if max_connections is not None:
        options["max_connections"] = max_connections
    if spec.ssl:
        options["ssl"] = True
    return sentinel.master_for(
        spec.service,
        db=spec.db,
        username=spec.username,
        password=spec.password,
        **options,
    )


def describe_url(url: str) -> str:
    """`url` without its credentials and options, for logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


async def answers(redis: aioredis.Redis) -> bool:
    """Whether a primary answers a PING now (False, not an error, when none does)."""
    try:
        return bool(await redis.ping())
    except RedisError:
        return False


async def close_quietly(redis: aioredis.Redis) -> None:
    """Close the client's connections; a Redis already gone is no error at shutdown."""
    with contextlib.suppress(RedisError):
        await redis.aclose()


@contextlib.contextmanager
def unavailable(message: str, *, retry_after: int | None = None) -> Iterator[None]:
    """A Redis error inside becomes `errors.NotReady(message)` (503, retryable)."""
    try:
        yield
    except RedisError as exc:
        raise errors.NotReady(message, retry_after=retry_after) from exc
