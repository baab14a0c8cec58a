"""Rate limits counted in Redis, shared by every API node (see ``relevo.ratelimit``).

A fixed one-second window per key: ``INCR`` and ``EXPIRE`` in one round trip. Over ``rate``
in the current second, the request waits for the next one.
"""

from __future__ import annotations

import time

try:
    import redis.asyncio as redis_asyncio
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("redis:// needs the Redis driver: pip install 'relevo[redis]'") from exc

PREFIX = "relevo:rate"


class RedisLimiter:
    def __init__(self, url: str, rate: float, prefix: str = PREFIX) -> None:
        self._client = redis_asyncio.Redis.from_url(url)
        self._rate = rate
        self._prefix = prefix

    async def wait_time(self, key: str) -> float:
        now = time.time()
        second = int(now)
        name = f"{self._prefix}:{key}:{second}"
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.incr(name)
            pipe.expire(name, 2)
            count, _ = await pipe.execute()
        if int(count) <= self._rate:
            return 0.0
        return max(0.001, second + 1 - now)

    async def close(self) -> None:
        await self._client.aclose()
