"""Redis URLs as `[location] url` and `[assignments] url` accept them, parsed into where
and how to connect (the connection itself is tested against a real redis-server in
tests/integration/test_redis_connection.py)."""

from __future__ import annotations

import pytest

from homeredirect.config.fields import is_redis_url
from homeredirect.redis_connection import RedisAddress, parse_redis_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisAddress("127.0.0.1", 6379, None, 0, False, None, None)),
        (
            "redis://cache.example.com",
            RedisAddress("cache.example.com", 6379, None, 0, False, None, None),
        ),
        (
            "rediss://cache.example.com:6380/3",
            RedisAddress("cache.example.com", 6380, None, 3, True, None, None),
        ),
        (
            "redis://:s%40cret@[::1]:7000/1",
            RedisAddress("::1", 7000, None, 1, False, None, "s@cret"),
        ),
        ("redis://app:pw@10.0.0.5/2", RedisAddress("10.0.0.5", 6379, None, 2, False, "app", "pw")),
        (
            "unix:///run/redis/redis.sock",
            RedisAddress(None, 0, "/run/redis/redis.sock", 0, False, None, None),
        ),
        (
            "unix:///run/redis.sock?db=4",
            RedisAddress(None, 0, "/run/redis.sock", 4, False, None, None),
        ),
    ],
)
def test_accepted_urls_parse(url: str, expected: RedisAddress) -> None:
    assert is_redis_url(url)
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "redis:///0", "redis://host/x", "unix://relative", "redis://h/0/1"]
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)


def test_description_hides_credentials() -> None:
    address = parse_redis_url("rediss://app:secret@[2001:db8::1]:6380/2")
    assert address.describe() == "rediss://[2001:db8::1]:6380/2"
    assert "secret" not in address.describe()
