"""The allowlist of functions a rule may call. Nothing else is callable from a rule.

Pure functions carry their implementation here; the few that read the data (``now``,
``event_count``) or evaluate lazily (``coalesce``) are built by ``compile``. Every
implementation takes any values and returns a value or null; none raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relevo.rules.values import aware, is_number, to_datetime


@dataclass(frozen=True)
class Function:
    name: str
    min_args: int
    max_args: int | None  # None: any number
    summary: str
    impl: Callable[..., Any] | None = None  # None: compile builds it
    literal_string: bool = False  # the argument must be a string literal (checked on save)
    reads: str | None = None  # the root it reads (for roots= checks and .fields)


def _duration(unit: str) -> Callable[[Any], timedelta | None]:
    def make(amount: Any) -> timedelta | None:
        if not is_number(amount):
            return None
        try:
            return timedelta(**{unit: amount})
        except (OverflowError, ValueError):
            return None

    make.__name__ = unit
    return make


def _extreme(pick: Callable[..., Any]) -> Callable[..., Any]:
    def extreme(*values: Any) -> Any:
        if len(values) == 1 and isinstance(values[0], list | tuple):
            values = tuple(values[0])
        present = [v for v in values if v is not None]
        if not present:
            return None
        if all(is_number(v) for v in present):
            return pick(present)
        if all(isinstance(v, str) for v in present):
            return pick(present)
        if all(isinstance(v, timedelta) for v in present):
            return pick(present)
        if all(isinstance(v, datetime) for v in present):
            try:
                return pick(aware(v) for v in present)
            except (TypeError, ValueError, OverflowError):
                return None
        return None

    return extreme


def _abs(value: Any) -> Any:
    if is_number(value) or isinstance(value, timedelta):
        try:
            return abs(value)
        except OverflowError:
            return None
    return None


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _upper(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) else None


def _len(value: Any) -> int | None:
    if isinstance(value, str | list | tuple | set | frozenset | Mapping):
        try:
            return len(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


_TABLE = [
    Function("now", 0, 0, "the evaluation time (data['now'])"),
    Function("days", 1, 1, "a duration of n days", _duration("days")),
    Function("hours", 1, 1, "a duration of n hours", _duration("hours")),
    Function("minutes", 1, 1, "a duration of n minutes", _duration("minutes")),
    Function("weeks", 1, 1, "a duration of n weeks", _duration("weeks")),
    Function(
        "date", 1, 1, "a datetime from an ISO 8601 string literal", to_datetime, literal_string=True
    ),
    Function(
        "to_date", 1, 1, "a datetime from an ISO string, epoch seconds or datetime", to_datetime
    ),
    Function(
        "event_count",
        1,
        1,
        "how many events of this name the profile has seen",
        literal_string=True,
        reads="profile",
    ),
    Function("max", 1, None, "the largest argument (or list item), nulls ignored", _extreme(max)),
    Function("min", 1, None, "the smallest argument (or list item), nulls ignored", _extreme(min)),
    Function("abs", 1, 1, "the absolute value of a number or duration", _abs),
    Function("lower", 1, 1, "a string in lower case", _lower),
    Function("upper", 1, 1, "a string in upper case", _upper),
    Function("len", 1, 1, "the length of a string, list, object or set", _len),
    Function("coalesce", 1, None, "the first argument that is not null"),
]

FUNCTIONS: Mapping[str, Function] = {f.name: f for f in _TABLE}
