"""When to retry a delivery, and when to give up: classification, backoff, budget, Retry-After.

Pure: time comes in as arguments (or from an injected clock), randomness from an injected
``random.Random``.

Classification of one attempt's outcome:

- SUCCESS: a 2xx.
- RETRY: a network error or timeout (``OutboundError``), 408, 429 and every 5xx.
- PERMANENT: every other status, including 410 (which also asks to disable the endpoint), 413,
  and 3xx since redirects are never followed; a refused destination (``UnsafeUrl``) or another
  invalid request; and any unexpected exception (a bug is not cured by waiting, and the
  failed-events store keeps the event for a replay once it is fixed).

Backoff is exponential with FULL jitter: the wait after the n-th failed attempt is drawn
uniformly from ``[0, min(max_delay, base_delay * multiplier ** (n - 1))]``. A ``Retry-After``
(delta-seconds or HTTP-date) is a floor under that draw, itself capped by ``max_retry_after``.
The budget is ``max_attempts`` and/or ``max_age`` from the first attempt (4 h by default, as
Segment retries); once spent, ``next_attempt`` returns None and the event goes to the
failed-events store.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Protocol

from relevo._clock import Clock, SystemClock
from relevo.channels.errors import OutboundError, OutboundTimeout
from relevo.errors import ValidationError

__all__ = [
    "Classification",
    "RetryPolicy",
    "RetrySchedule",
    "Verdict",
    "classify",
    "classify_exception",
    "classify_status",
    "parse_retry_after",
    "retry_after_from_headers",
]

MAX_RETRY_AFTER_SECONDS = 10**9  # beyond any cap; keeps timedelta from overflowing


class Verdict(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Classification:
    """The verdict on one attempt, with a reason fit for the failed-events store.

    ``disable_endpoint`` is set for 410 Gone: the receiver says the endpoint is gone for good.
    """

    verdict: Verdict
    reason: str
    disable_endpoint: bool = False


class HasStatus(Protocol):
    @property
    def status(self) -> int: ...


_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def classify_status(status: int) -> Classification:
    """SUCCESS for 2xx; RETRY for 408, 429, 5xx; PERMANENT for anything else."""
    label = f"HTTP {status} {_PHRASES.get(status, '')}".rstrip()
    if 200 <= status < 300:
        return Classification(Verdict.SUCCESS, label)
    if status in (408, 429) or 500 <= status < 600:
        return Classification(Verdict.RETRY, label)
    if 300 <= status < 400:
        return Classification(Verdict.PERMANENT, f"{label}: redirects are not followed")
    if status == 410:
        return Classification(Verdict.PERMANENT, f"{label}: the endpoint is gone", True)
    return Classification(Verdict.PERMANENT, label)


def classify_exception(exc: BaseException) -> Classification:
    """RETRY for network errors and timeouts; PERMANENT for refused or invalid requests."""
    if isinstance(exc, OutboundTimeout):
        return Classification(Verdict.RETRY, f"timeout ({exc.phase}): {exc}")
    if isinstance(exc, OutboundError):
        return Classification(Verdict.RETRY, f"network error: {exc}")
    if isinstance(exc, ValidationError):
        return Classification(Verdict.PERMANENT, f"refused: {exc}")
    if isinstance(exc, TimeoutError | ConnectionError):
        return Classification(Verdict.RETRY, f"network error: {exc!r}")
    return Classification(Verdict.PERMANENT, f"unexpected error: {exc!r}")


def classify(outcome: HasStatus | BaseException) -> Classification:
    """Classify a response (anything with an int ``status``) or the exception a send raised."""
    if isinstance(outcome, BaseException):
        return classify_exception(outcome)
    return classify_status(outcome.status)


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` value as a wait from ``now``: delta-seconds or an HTTP-date.

    A date in the past is a wait of zero; an unreadable value is None (ignored).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return timedelta(seconds=min(int(text), MAX_RETRY_AFTER_SECONDS))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
    return max(when - now, timedelta(0))


def retry_after_from_headers(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """``parse_retry_after`` of a response's ``retry-after`` header (lower-case names)."""
    return parse_retry_after(headers.get("retry-after"), now)


@dataclass(frozen=True)
class RetryPolicy:
    """The knobs of the backoff and the budget.

    Attributes:
        base_delay: the jitter ceiling after the first failure.
        multiplier: how much the ceiling grows per failure.
        max_delay: the cap on the ceiling (and so on every drawn delay).
        max_attempts: attempts in all, the first included (None: no limit by count).
        max_age: how long after the first attempt a retry may still be scheduled (None: no
            limit by age). At least one of the two limits must be set.
        max_retry_after: the cap on a receiver's ``Retry-After``.
    """

    base_delay: timedelta = timedelta(seconds=2)
    multiplier: float = 2.0
    max_delay: timedelta = timedelta(minutes=15)
    max_attempts: int | None = None
    max_age: timedelta | None = field(default=timedelta(hours=4))
    max_retry_after: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_attempts is None and self.max_age is None:
            raise ValueError("a retry policy needs max_attempts or max_age: retries must end")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts counts the first attempt, so it is at least 1")
        if self.multiplier < 1 or self.base_delay <= timedelta(0):
            raise ValueError("base_delay must be positive and multiplier at least 1")
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")


class RetrySchedule:
    """Computes retry times for one policy, with injected randomness and clock.

    Args:
        policy: the backoff and budget.
        rng: the source of jitter; pass ``random.Random(seed)`` for a reproducible schedule.
        clock: used when ``next_attempt`` is given no ``now``.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._clock = clock or SystemClock()

    def ceiling(self, attempt: int) -> timedelta:
        """The jitter ceiling after ``attempt`` failed attempts (>= 1): grows, then caps."""
        if attempt < 1:
            raise ValueError("attempt counts failed attempts, from 1")
        policy = self.policy
        cap = policy.max_delay.total_seconds()
        base = policy.base_delay.total_seconds()
        exponent = attempt - 1
        # compare in log space so that huge attempt numbers cannot overflow a float
        if policy.multiplier > 1 and exponent * math.log(policy.multiplier) >= math.log(cap / base):
            return policy.max_delay
        return min(policy.max_delay, timedelta(seconds=base * policy.multiplier**exponent))

    def backoff(self, attempt: int) -> timedelta:
        """A full-jitter delay in ``[0, ceiling(attempt)]``."""
        ceiling = self.ceiling(attempt).total_seconds()
        return timedelta(seconds=self._rng.uniform(0.0, ceiling))

    def next_attempt(
        self,
        attempt: int,
        now: datetime | None = None,
        retry_after: timedelta | None = None,
        *,
        first_attempt_at: datetime,
    ) -> datetime | None:
        """When to try again after ``attempt`` failed attempts, or None when the budget is spent.

        Args:
            attempt: how many attempts have been made (and failed), the first included.
            now: the time of the failure (the clock's time by default).
            retry_after: the receiver's ``Retry-After``; the retry is not scheduled earlier
                (up to ``max_retry_after``).
            first_attempt_at: when the first attempt was made; ``max_age`` counts from it.

        Returns:
            The time of the next attempt, or None: give up and store the failed event.
        """
        policy = self.policy
        if policy.max_attempts is not None and attempt >= policy.max_attempts:
            return None
        current = now or self._clock.now()
        delay = self.backoff(attempt)
        if retry_after is not None:
            floor = min(max(retry_after, timedelta(0)), policy.max_retry_after)
            delay = max(delay, floor)
        when = current + delay
        if policy.max_age is not None and when - first_attempt_at > policy.max_age:
            return None
        return when
