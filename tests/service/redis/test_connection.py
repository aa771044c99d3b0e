"""Redis URLs: a single server or Sentinel; the Sentinel form parsed without echoing
credentials, and a client that finds the primary through real Sentinels."""

from __future__ import annotations

import pytest

from service.processes import SentinelGroup
from service.redis.connection import connect, describe_url, parse_sentinel_url


def test_sentinel_url_parts():
    spec = parse_sentinel_url(
        "redis+sentinel://user:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:5000/gmaivl/2"
        "?sentinel_password=sp&ssl=true"
    )
    assert spec.hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 5000)]
    assert (spec.service, spec.db) == ("gmaivl", 2)
    assert (spec.username, spec.password) == ("user", "s@cret")
    assert spec.sentinel_password == "sp" and spec.ssl


def test_sentinel_url_defaults_to_db_0():
    spec = parse_sentinel_url("redis+sentinel://h:1/svc")
    assert (spec.hosts, spec.service, spec.db, spec.password) == ([("h", 1)], "svc", 0, None)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:pw@h:1/",  # no service
        "redis+sentinel://:pw@h:x/svc/0",  # bad port
        "redis+sentinel://:pw@h:1/svc/zero",  # bad db
        "redis+sentinel://:pw@h:1/a/b/c",
    ],
)
def test_bad_sentinel_urls_are_refused_without_the_password(url):
    with pytest.raises(ValueError) as err:
        parse_sentinel_url(url)
    assert "pw" not in str(err.value)


def test_describe_url_drops_credentials():
    assert describe_url("redis+sentinel://u:pw@h:1,g:2/svc/0?sentinel_password=x") == (
        "redis+sentinel://h:1,g:2/svc/0"
    )


async def test_client_follows_the_sentinels_to_the_primary(tmp_path):
    group = SentinelGroup(tmp_path, sentinels=1)
    try:
        client = connect(group.url)
        await client.set("k", "v")
        info = await client.info("replication")
        assert info["role"] == "master"
        assert await client.connection_pool.get_master_address() == (
            "127.0.0.1",
            group.primary.port,
        )
        await client.aclose()
    finally:
        group.close()


async def test_every_user_sees_a_dead_redis_alike():
    """The helpers both queue sides and the tenant limiter share: a server that does not
    answer is `answers() == False`, its errors are 503 `not_ready`, closing is quiet."""
    from service import errors
    from service.processes import RedisServer
    from service.redis.connection import answers, close_quietly, unavailable

    server = RedisServer().start()
    client = connect(server.url)
    try:
        assert await answers(client)
        server.stop()
        assert not await answers(client)
        with pytest.raises(errors.NotReady) as err, unavailable("gone", retry_after=2):
            await client.get("k")
        assert (err.value.code, err.value.retry_after) == ("not_ready", 2)
    finally:
        await close_quietly(client)
        server.stop()
