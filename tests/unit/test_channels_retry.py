"""Retry policy (R10, R11, R12): classification, full-jitter backoff, budget, Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from relevo._clock import ManualClock
from relevo.channels.errors import (
    HostNotFound,
    OutboundConnectError,
    OutboundNetworkError,
    OutboundTimeout,
    UnsafeUrl,
)
from relevo.channels.retry import (
    RetryPolicy,
    RetrySchedule,
    Verdict,
    classify,
    classify_exception,
    classify_status,
    parse_retry_after,
    retry_after_from_headers,
)
from relevo.errors import ValidationError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Answer:
    status: int


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert classify_status(status).verdict is Verdict.SUCCESS


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_408_429_and_5xx_are_retried(status: int) -> None:
    outcome = classify_status(status)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.reason.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 422, 451, 499])
def test_other_4xx_are_permanent(status: int) -> None:
    outcome = classify_status(status)
    assert outcome.verdict is Verdict.PERMANENT
    assert outcome.reason.startswith(f"HTTP {status}")
    assert outcome.disable_endpoint == (status == 410)


def test_410_disables_the_endpoint() -> None:
    outcome = classify_status(410)
    assert outcome.disable_endpoint
    assert outcome.reason == "HTTP 410 Gone: the endpoint is gone"


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_redirects_are_permanent_since_they_are_not_followed(status: int) -> None:
    outcome = classify_status(status)
    assert outcome.verdict is Verdict.PERMANENT
    assert "redirects are not followed" in outcome.reason


@pytest.mark.parametrize("status", [100, 101, 600, 999])
def test_odd_statuses_are_permanent(status: int) -> None:
    assert classify_status(status).verdict is Verdict.PERMANENT


@pytest.mark.parametrize(
    "exc",
    [
        OutboundTimeout("read timeout", phase="read"),
        OutboundTimeout("slow", phase="total"),
        OutboundConnectError("refused"),
        HostNotFound("no such host"),
        OutboundNetworkError("reset"),
        ConnectionResetError("reset"),
        TimeoutError(),
    ],
)
def test_network_errors_and_timeouts_are_retried(exc: Exception) -> None:
    assert classify_exception(exc).verdict is Verdict.RETRY
    assert classify(exc).verdict is Verdict.RETRY


def test_timeouts_name_their_phase() -> None:
    assert "timeout (connect)" in classify(OutboundTimeout("x", phase="connect")).reason


@pytest.mark.parametrize(
    "exc",
    [UnsafeUrl("10.0.0.1 is private", reason="private"), ValidationError("bad header")],
)
def test_refused_and_invalid_requests_are_permanent(exc: Exception) -> None:
    outcome = classify(exc)
    assert outcome.verdict is Verdict.PERMANENT
    assert outcome.reason.startswith("refused: ")


def test_unexpected_exceptions_are_permanent_so_the_event_is_kept_for_replay() -> None:
    outcome = classify(KeyError("boom"))
    assert outcome.verdict is Verdict.PERMANENT
    assert "unexpected error" in outcome.reason


def test_classify_takes_anything_with_a_status() -> None:
    assert classify(Answer(204)).verdict is Verdict.SUCCESS
    assert classify(Answer(503)).verdict is Verdict.RETRY
    assert classify(Answer(302)).verdict is Verdict.PERMANENT


# --- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("Sun, 01 Mar 2026 12:05:00 GMT", timedelta(minutes=5)),  # IMF-fixdate
        ("Sunday, 01-Mar-26 12:00:30 GMT", timedelta(seconds=30)),  # RFC 850
        ("Sun Mar  1 12:01:00 2026", timedelta(minutes=1)),  # asctime
        ("Sun, 01 Mar 2026 11:00:00 GMT", timedelta(0)),  # in the past: no wait
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("99999999999999999999", timedelta(seconds=10**9)),
    ],
)
def test_retry_after_delta_seconds_and_http_dates(
    value: str | None, expected: timedelta | None
) -> None:
    assert parse_retry_after(value, T0) == expected


def test_retry_after_from_headers() -> None:
    assert retry_after_from_headers({"retry-after": "7"}, T0) == timedelta(seconds=7)
    assert retry_after_from_headers({}, T0) is None


# --- backoff and budget --------------------------------------------------------------------


def test_ceiling_grows_exponentially_then_caps() -> None:
    schedule = RetrySchedule(
        RetryPolicy(base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=60))
    )
    assert [schedule.ceiling(n).total_seconds() for n in range(1, 9)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
    ]
    assert schedule.ceiling(10**9) == timedelta(seconds=60)  # no overflow


def test_the_same_seed_gives_the_same_schedule() -> None:
    def delays(seed: int) -> list[timedelta]:
        schedule = RetrySchedule(rng=random.Random(seed))
        return [schedule.backoff(n) for n in range(1, 30)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_jitter_is_full_not_equal() -> None:
    # full jitter draws from [0, ceiling]: a good share of delays fall below half the ceiling
    schedule = RetrySchedule(
        RetryPolicy(base_delay=timedelta(seconds=100), max_delay=timedelta(seconds=100)),
        rng=random.Random(1),
    )
    draws = [schedule.backoff(1).total_seconds() for _ in range(2000)]
    assert min(draws) < 5
    assert 0.4 < sum(d < 50 for d in draws) / len(draws) < 0.6
    assert 45 < sum(draws) / len(draws) < 55


policies = st.builds(
    RetryPolicy,
    base_delay=st.integers(1, 120).map(lambda s: timedelta(seconds=s)),
    multiplier=st.floats(1.0, 4.0),
    max_delay=st.integers(120, 7200).map(lambda s: timedelta(seconds=s)),
    max_attempts=st.one_of(st.none(), st.integers(1, 50)),
    max_age=st.integers(60, 24 * 3600).map(lambda s: timedelta(seconds=s)),
    max_retry_after=st.integers(0, 7200).map(lambda s: timedelta(seconds=s)),
)


@given(policies, st.integers(1, 10_000), st.integers(0, 2**32))
def test_delays_are_within_zero_and_the_cap(policy: RetryPolicy, attempt: int, seed: int) -> None:
    schedule = RetrySchedule(policy, rng=random.Random(seed))
    delay = schedule.backoff(attempt)
    assert timedelta(0) <= delay <= schedule.ceiling(attempt) <= policy.max_delay


@given(policies, st.integers(1, 200))
def test_the_ceiling_never_shrinks(policy: RetryPolicy, attempt: int) -> None:
    schedule = RetrySchedule(policy)
    assert schedule.ceiling(attempt) <= schedule.ceiling(attempt + 1) <= policy.max_delay
    assert schedule.ceiling(1) == policy.base_delay


@given(
    policies,
    st.integers(1, 60),
    st.integers(0, 48 * 3600),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.integers(0, 2**32),
)
def test_next_attempt_respects_the_budget_and_retry_after(
    policy: RetryPolicy, attempt: int, age: int, retry_after: int | None, seed: int
) -> None:
    schedule = RetrySchedule(policy, rng=random.Random(seed))
    now = T0 + timedelta(seconds=age)
    wait = None if retry_after is None else timedelta(seconds=retry_after)
    when = schedule.next_attempt(attempt, now, wait, first_attempt_at=T0)
    if policy.max_attempts is not None and attempt >= policy.max_attempts:
        assert when is None
    if when is None:
        return
    assert when >= now
    assert policy.max_age is not None and when - T0 <= policy.max_age
    assert when - now <= max(policy.max_delay, policy.max_retry_after)
    if wait is not None:
        assert when - now >= min(wait, policy.max_retry_after)


def test_retry_after_is_a_floor_capped_by_max_retry_after() -> None:
    schedule = RetrySchedule(
        RetryPolicy(
            base_delay=timedelta(seconds=1),
            max_delay=timedelta(seconds=2),
            max_retry_after=timedelta(minutes=10),
        ),
        rng=random.Random(3),
    )
    assert schedule.next_attempt(1, T0, timedelta(seconds=90), first_attempt_at=T0) == T0 + (
        timedelta(seconds=90)
    )
    assert schedule.next_attempt(1, T0, timedelta(days=2), first_attempt_at=T0) == T0 + (
        timedelta(minutes=10)
    )


def test_a_retry_after_beyond_the_age_budget_ends_the_retries() -> None:
    schedule = RetrySchedule(RetryPolicy(max_age=timedelta(hours=4)), rng=random.Random(0))
    late = T0 + timedelta(hours=3, minutes=59)
    assert schedule.next_attempt(5, late, timedelta(minutes=30), first_attempt_at=T0) is None


def test_max_attempts_counts_the_first_attempt() -> None:
    schedule = RetrySchedule(RetryPolicy(max_attempts=3, max_age=None), rng=random.Random(0))
    assert schedule.next_attempt(1, T0, first_attempt_at=T0) is not None
    assert schedule.next_attempt(2, T0, first_attempt_at=T0) is not None
    assert schedule.next_attempt(3, T0, first_attempt_at=T0) is None


def test_a_destination_down_for_good_exhausts_the_default_four_hour_budget() -> None:
    # R12: failing forever ends in a bounded number of attempts, all within 4 h, then None
    clock = ManualClock(T0)
    schedule = RetrySchedule(rng=random.Random(42), clock=clock)
    attempts = 1
    while (when := schedule.next_attempt(attempts, first_attempt_at=T0)) is not None:
        assert when >= clock.now()
        clock.advance(seconds=(when - clock.now()).total_seconds())
        attempts += 1
    assert clock.now() - T0 <= timedelta(hours=4)
    assert 20 <= attempts <= 200


def test_a_destination_down_ten_minutes_is_retried_soon_after_it_recovers() -> None:
    # R10: the gaps stay bounded by the cap, so delivery follows recovery within max_delay
    policy = RetryPolicy(max_delay=timedelta(minutes=2))
    clock = ManualClock(T0)
    schedule = RetrySchedule(policy, rng=random.Random(5), clock=clock)
    attempts = 1
    recovered_at = T0 + timedelta(minutes=10)
    while clock.now() < recovered_at:
        when = schedule.next_attempt(attempts, first_attempt_at=T0)
        assert when is not None
        clock.advance(seconds=(when - clock.now()).total_seconds())
        attempts += 1
    assert clock.now() - recovered_at <= policy.max_delay


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": None, "max_age": None},
        {"max_attempts": 0},
        {"multiplier": 0.5},
        {"base_delay": timedelta(0)},
        {"base_delay": timedelta(minutes=5), "max_delay": timedelta(minutes=1)},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        RetrySchedule().ceiling(0)
