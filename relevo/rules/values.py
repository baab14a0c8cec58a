"""What the operators do to values: the null and type rules, in one place.

Every function here takes any values and returns a value; none raises. A missing field is
``None`` (null). Values have a *kind*: number (int or float, never bool), string, boolean,
datetime (a naive one is taken as UTC), duration (timedelta), list, object (dict) or set.

* ``==`` is true only for two values of one kind that are equal (``1 == 1.0``, but
  ``1 != true`` and ``"1" != 1``); lists and objects are equal item by item by the same rule;
  null is equal to nothing. ``!=`` is ``not ==``.
* ``< <= > >=`` hold between two numbers, strings, datetimes or durations; otherwise false.
* Arithmetic on kinds it does not fit, division by zero and overflow give null.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _same_kind(a: Any, b: Any) -> str | None:
    """The kind two values share for ordering, or None."""
    if is_number(a) and is_number(b):
        return "number"
    if isinstance(a, str) and isinstance(b, str):
        return "string"
    if isinstance(a, datetime) and isinstance(b, datetime):
        return "datetime"
    if isinstance(a, timedelta) and isinstance(b, timedelta):
        return "duration"
    return None


def equal(a: Any, b: Any) -> bool:
    return _equal(a, b, 0)


_MAX_NESTING = 32  # lists and objects nested deeper than this are never equal


def _equal(a: Any, b: Any, depth: int) -> bool:
    if a is None or b is None:
        return False
    kind = _same_kind(a, b)
    if kind == "datetime":
        return _datetime_compare(a, b, 0)
    if kind is not None:
        return bool(a == b)
    if isinstance(a, bool) and isinstance(b, bool):
        return a is b
    if depth >= _MAX_NESTING:
        return False
    # lists and objects: equal item by item, by these same rules ([1] != [true])
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return len(a) == len(b) and all(
            key in b and _equal(value, b[key], depth + 1) for key, value in a.items()
        )
    if isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        return a == b
    return False


def not_equal(a: Any, b: Any) -> bool:
    return not equal(a, b)


def _datetime_compare(a: datetime, b: datetime, sign: int, or_equal: bool = True) -> bool:
    try:
        x, y = aware(a), aware(b)
        if sign == 0:
            return x == y
        if sign < 0:
            return x <= y if or_equal else x < y
        return x >= y if or_equal else x > y
    except (TypeError, ValueError, OverflowError):  # a tzinfo that misbehaves
        return False


_SAME_TYPE_ORDERED = frozenset({int, float, str, timedelta})


def less(a: Any, b: Any) -> bool:
    kind = type(a)
    if kind is type(b):
        if kind in _SAME_TYPE_ORDERED:
            return a < b  # type: ignore[no-any-return]
        if kind is datetime:
            return _datetime_compare(a, b, -1, or_equal=False)
    common = _same_kind(a, b)
    if common == "datetime":
        return _datetime_compare(a, b, -1, or_equal=False)
    return common is not None and bool(a < b)


def less_equal(a: Any, b: Any) -> bool:
    kind = type(a)
    if kind is type(b):
        if kind in _SAME_TYPE_ORDERED:
            return a <= b  # type: ignore[no-any-return]
        if kind is datetime:
            return _datetime_compare(a, b, -1)
    common = _same_kind(a, b)
    if common == "datetime":
        return _datetime_compare(a, b, -1)
    return common is not None and bool(a <= b)


def greater(a: Any, b: Any) -> bool:
    return less(b, a)


def greater_equal(a: Any, b: Any) -> bool:
    return less_equal(b, a)


def member(item: Any, container: Any) -> bool:
    """``item in container``: an element of a list or set, a key of an object, a substring."""
    if item is None or container is None:
        return False
    if isinstance(item, str) and type(container) in _STRING_CONTAINERS:
        # a string equals only a string, so Python's `in` is exact here (and a substring
        # test when the container is a string)
        return item in container
    if isinstance(container, str):
        return False
    if isinstance(container, list | tuple | set | frozenset):
        return any(equal(item, element) for element in container)
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


_STRING_CONTAINERS = frozenset({set, frozenset, dict, list, tuple, str})


def starts_with(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.startswith(b)


def ends_with(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.endswith(b)


def membership_key(value: Any) -> tuple[str, Any] | None:
    """A hashable key equal for exactly the values ``equal`` calls equal (scalars only)."""
    if isinstance(value, bool):
        return ("bool", value)
    if is_number(value):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, datetime):
        try:
            return ("datetime", aware(value))
        except (TypeError, ValueError, OverflowError):
            return None
    if isinstance(value, timedelta):
        return ("duration", value)
    return None


_ARITHMETIC_ERRORS = (ArithmeticError, ValueError, TypeError)


def add(a: Any, b: Any) -> Any:
    try:
        if is_number(a) and is_number(b):
            return a + b
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        if isinstance(a, datetime) and isinstance(b, timedelta):
            return aware(a) + b
        if isinstance(a, timedelta) and isinstance(b, datetime):
            return a + aware(b)
        if isinstance(a, timedelta) and isinstance(b, timedelta):
            return a + b
    except _ARITHMETIC_ERRORS:
        return None
    return None


def subtract(a: Any, b: Any) -> Any:
    try:
        if is_number(a) and is_number(b):
            return a - b
        if isinstance(a, datetime) and isinstance(b, datetime):
            return aware(a) - aware(b)
        if isinstance(a, datetime) and isinstance(b, timedelta):
            return aware(a) - b
        if isinstance(a, timedelta) and isinstance(b, timedelta):
            return a - b
    except _ARITHMETIC_ERRORS:
        return None
    return None


def multiply(a: Any, b: Any) -> Any:
    try:
        if is_number(a) and is_number(b):
            return a * b
        if isinstance(a, timedelta) and is_number(b):
            return a * b
        if is_number(a) and isinstance(b, timedelta):
            return b * a
    except _ARITHMETIC_ERRORS:
        return None
    return None


def divide(a: Any, b: Any) -> Any:
    try:
        if is_number(a) and is_number(b):
            return a / b if b != 0 else None
        if isinstance(a, timedelta) and (is_number(b) or isinstance(b, timedelta)):
            return a / b if b else None
    except _ARITHMETIC_ERRORS:
        return None
    return None


def modulo(a: Any, b: Any) -> Any:
    try:
        if is_number(a) and is_number(b):
            return a % b if b != 0 else None
    except _ARITHMETIC_ERRORS:
        return None
    return None


def negative(a: Any) -> Any:
    try:
        if is_number(a) or isinstance(a, timedelta):
            return -a
    except _ARITHMETIC_ERRORS:
        return None
    return None


def truthy(value: Any) -> bool:
    """Truthiness: null, false, 0, "" and empty containers are false; anything else is true."""
    try:
        return bool(value)
    except (TypeError, ValueError):  # only exotic objects refuse bool(); data never does
        return False


def to_datetime(value: Any) -> datetime | None:
    """A datetime from a datetime, an ISO 8601 string or epoch seconds; null otherwise."""
    try:
        if isinstance(value, datetime):
            return aware(value)
        if isinstance(value, str):
            if len(value) > 64:
                return None
            return aware(datetime.fromisoformat(value))
        if is_number(value):
            return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError, TypeError):
        return None
    return None
