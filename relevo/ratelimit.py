"""Request rate limits per API key: over the limit, a request is answered 429 with a
``Retry-After``, before any work is done for it.

Off by default (``RELEVO_RATE_LIMIT_PER_SECOND``). In one process the budget is a token bucket
per key (bursts up to one second's worth); with ``RELEVO_CACHE_URL=redis://...`` it is a
one-second window counted in Redis, shared by every API node (``relevo.store.redis_ratelimit``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from relevo.errors import Overloaded

KEYS_KEPT = 100_000  # buckets kept in one process before the idle ones are forgotten


class RateLimiter(Protocol):
    async def wait_time(self, key: str) -> float:
        """0 if a request of ``key`` may go now (and counts it), else the seconds to wait."""
        ...

    async def close(self) -> None: ...


class NoLimit:
    async def wait_time(self, key: str) -> float:
        return 0.0

    async def close(self) -> None:
        return None


@dataclass
class _Bucket:
    tokens: float
    at: float


class LocalLimiter:
    """A token bucket per key: ``rate`` requests a second, bursts up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._buckets: dict[str, _Bucket] = {}

    async def wait_time(self, key: str) -> float:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= KEYS_KEPT:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self._rate, now)
        bucket.tokens = min(self._rate, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    async def close(self) -> None:
        return None


async def check_rate(limiter: RateLimiter, key: str) -> None:
    """Raise Overloaded (429, with the seconds to wait) when ``key`` is over its rate."""
    wait = await limiter.wait_time(key)
    if wait > 0:
        raise Overloaded(
            "over this key's rate limit: slow down", retry_after=max(1, math.ceil(wait))
        )
