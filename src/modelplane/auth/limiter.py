"""Request rates and concurrency per tenant and per key, in memory or shared through Redis.

``limits`` has no token bucket. A token bucket of rate ``r`` and capacity
``b`` lets through at most ``b`` requests at once and ``r`` per second in the
long run. We get the same two bounds from a *moving window* of ``b`` requests
per ``ceil(b / r)`` seconds: a burst of up to ``b`` passes at once, and no
window of that length ever holds more than ``b``, so the long-run rate stays at
or under ``r`` (under it when ``b / r`` is not whole, as Redis expiries are whole
seconds). Unlike a fixed window it never lets ``2b`` through across a window
edge; unlike the sliding-window counter it is exact. Its cost is one list of at
most ``b`` timestamps per tenant or key.

Concurrency is a counter per tenant; with Redis, a sorted set of request ids
scored by start time, so a process that dies mid-request leaks nothing for
longer than ``STALE_SECONDS``.

Storage errors (Redis down) let requests through and are logged: an outage of
the limiter should not become an outage of inference.
"""

from __future__ import annotations

import logging
import math
import time
import uuid

import redis.asyncio as aioredis
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

log = logging.getLogger("modelplane.auth")
STALE_SECONDS = 600.0
_NS = "modelplane"


def window(rate: float, burst: int) -> RateLimitItemPerSecond:
    """``burst`` requests per ``ceil(burst / rate)`` seconds."""
    return RateLimitItemPerSecond(burst, max(1, math.ceil(burst / rate)), namespace=_NS)


class Limiter:
    def __init__(self, redis_url: str = "") -> None:
        self.redis_url = redis_url
        if redis_url:
            url = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
            storage = storage_from_string(url, implementation="redispy", wrap_exceptions=True)
            self._redis: aioredis.Redis | None = aioredis.Redis.from_url(
                redis_url.removeprefix("async+")
            )
        else:
            storage = MemoryStorage()
            self._redis = None
        self._windows = MovingWindowRateLimiter(storage)
        self._items: dict[tuple[float, int], RateLimitItemPerSecond] = {}
        self._running: dict[str, int] = {}
        self._warned = 0.0

    def _item(self, rate: float, burst: int) -> RateLimitItemPerSecond:
        item = self._items.get((rate, burst))
        if item is None:
            item = self._items[(rate, burst)] = window(rate, burst)
        return item

    async def hit(self, scope: str, rate: float, burst: int) -> int:
        """Count one request against ``scope``; 0 if allowed, else seconds to wait."""
        item = self._item(rate, burst)
        try:
            if await self._windows.hit(item, scope):
                return 0
            reset, _ = await self._windows.get_window_stats(item, scope)
        except (StorageError, RedisError, OSError) as exc:
            self._warn(exc)
            return 0
        return max(1, math.ceil(reset - time.time()))

    async def acquire(self, tenant: str, limit: int) -> str | None:
        """Take a concurrency slot; a token to ``release``, or None when all are taken."""
        if self._redis is None:
            running = self._running.get(tenant, 0)
            if running >= limit:
                return None
            self._running[tenant] = running + 1
            return tenant
        key, token, now = f"{_NS}:running:{tenant}", uuid.uuid4().hex, time.time()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, 0, now - STALE_SECONDS)
                pipe.zadd(key, {token: now})
                pipe.zcard(key)
                pipe.expire(key, int(STALE_SECONDS))
                count = (await pipe.execute())[2]
            if count > limit:
                await self._redis.zrem(key, token)
                return None
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return ""
        return f"{key}\n{token}"

    async def release(self, tenant: str, token: str) -> None:
        if self._redis is None:
            self._running[tenant] = max(0, self._running.get(tenant, 1) - 1)
            return
        if not token:
            return
        key, _, member = token.partition("\n")
        try:
            await self._redis.zrem(key, member)
        except (RedisError, OSError) as exc:
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("rate limiter storage failed; letting requests through: %s", exc)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def check_redis(url: str) -> None:
    """Fail fast, with a clear message, when ``MODELPLANE_REDIS_URL`` does not answer."""
    import redis

    client = redis.Redis.from_url(
        url.removeprefix("async+"), socket_connect_timeout=3, socket_timeout=3
    )
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise RuntimeError(f"MODELPLANE_REDIS_URL {url!r} does not answer: {exc}") from exc
    finally:
        client.close()
