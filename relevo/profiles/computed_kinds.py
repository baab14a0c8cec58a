"""What each kind of computed trait does with a bucket: start one, fold a value into one, merge
two, and read the value of a run of live buckets.

``fold`` returns whether the bucket changed, so ``update`` can report which traits moved.
Values are ``prepare``d once per event and definition: numbers for the numeric kinds, a value
key (``value_key``) for the kinds that compare values; first/last keep the value as it is
(``prepare`` is ``None``). ``None`` means "skip this event" (a missing or null property, a
non-number for a numeric kind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from relevo.profiles.computed_defs import is_number
from relevo.profiles.computed_state import Bucket

DAY_MICROSECONDS = 86_400_000_000
_KEY_MARK = "\x00"  # value keys of non-strings start with it, so "1" and 1 stay apart

_encode = msgspec.json.Encoder(order="sorted").encode


def value_key(value: Any) -> str | None:
    """The identity of a value for distinct_count and most_frequent: strings as themselves,
    anything else as a mark and its JSON (``1`` and ``1.0`` are one value, ``true`` is not
    ``1``, objects compare by content). ``None`` for null and non-finite numbers."""
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if cls is float:
        if not is_number(value):
            return None
        if value.is_integer():
            value = int(value)
    return _KEY_MARK + _encode(value).decode()


def key_value(key: str) -> Any:
    """The value a ``value_key`` stands for."""
    return msgspec.json.decode(key[1:]) if key.startswith(_KEY_MARK) else key


def days_between(now: float, at: float) -> int:
    """Whole days from ``at`` to ``now`` (epoch seconds), never below 0; float noise is
    rounded away at the microsecond."""
    return max(0, round((now - at) * 1e6) // DAY_MICROSECONDS)


@dataclass(frozen=True, slots=True)
class KindOps:
    prepare: Callable[[Any], Any] | None
    new: Callable[[Any, float, str], Bucket]
    fold: Callable[[Bucket, Any, float, str, int], bool]
    merge: Callable[[Bucket, Bucket, int], None]
    value: Callable[[Sequence[Bucket], float], Any]
    empty: Any = None
    # the value reads the newest bucket only (last, days_since_last): keep just that one
    newest_only: bool = False


def _number(value: Any) -> Any:
    return value if is_number(value) else None


# -- count, sum, average -------------------------------------------------------------------------


def _count_new(value: Any, at: float, mid: str) -> Bucket:
    return Bucket(n=1)


def _count_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    bucket.n += 1
    return True


def _count_merge(into: Bucket, other: Bucket, cap: int) -> None:
    into.n += other.n


def _count_value(buckets: Sequence[Bucket], now: float) -> Any:
    return sum(b.n for b in buckets)


def _sum_new(value: Any, at: float, mid: str) -> Bucket:
    return Bucket(n=1, total=value)


def _sum_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    bucket.n += 1
    bucket.total += value
    return True


def _sum_merge(into: Bucket, other: Bucket, cap: int) -> None:
    into.n += other.n
    into.total += other.total


def _sum_value(buckets: Sequence[Bucket], now: float) -> Any:
    return sum(b.total for b in buckets)


def _average_value(buckets: Sequence[Bucket], now: float) -> Any:
    n = sum(b.n for b in buckets)
    return sum(b.total for b in buckets) / n if n else None


# -- min, max ------------------------------------------------------------------------------------


def _extreme_new(value: Any, at: float, mid: str) -> Bucket:
    return Bucket(value=value)


def _min_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    if value < bucket.value:
        bucket.value = value
        return True
    return False


def _max_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    if value > bucket.value:
        bucket.value = value
        return True
    return False


def _min_merge(into: Bucket, other: Bucket, cap: int) -> None:
    _min_fold(into, other.value, 0.0, "", cap)


def _max_merge(into: Bucket, other: Bucket, cap: int) -> None:
    _max_fold(into, other.value, 0.0, "", cap)


def _min_value(buckets: Sequence[Bucket], now: float) -> Any:
    return min(b.value for b in buckets)


def _max_value(buckets: Sequence[Bucket], now: float) -> Any:
    return max(b.value for b in buckets)


# -- first, last, days_since_last (ties on event time broken by message id) ------------------------


def _stamped_new(value: Any, at: float, mid: str) -> Bucket:
    return Bucket(value=value, at=at, mid=mid)


def _first_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    if at < bucket.at or (at == bucket.at and mid < bucket.mid):
        bucket.value, bucket.at, bucket.mid = value, at, mid
        return True
    return False


def _last_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    if at > bucket.at or (at == bucket.at and mid > bucket.mid):
        bucket.value, bucket.at, bucket.mid = value, at, mid
        return True
    return False


def _first_merge(into: Bucket, other: Bucket, cap: int) -> None:
    _first_fold(into, other.value, other.at, other.mid, cap)


def _last_merge(into: Bucket, other: Bucket, cap: int) -> None:
    _last_fold(into, other.value, other.at, other.mid, cap)


def _first_value(buckets: Sequence[Bucket], now: float) -> Any:
    return min(buckets, key=lambda b: (b.at, b.mid)).value


def _last_value(buckets: Sequence[Bucket], now: float) -> Any:
    return max(buckets, key=lambda b: (b.at, b.mid)).value


def _days_value(buckets: Sequence[Bucket], now: float) -> Any:
    return days_between(now, max(b.at for b in buckets))


# -- distinct_count, most_frequent ----------------------------------------------------------------


def _values_new(value: Any, at: float, mid: str) -> Bucket:
    return Bucket(values={value: 1})


def _distinct_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    values = bucket.values
    if values is None:
        bucket.values = {value: 1}
        return True
    if value in values or len(values) >= cap:
        return False
    values[value] = 1
    return True


def _frequency_fold(bucket: Bucket, value: Any, at: float, mid: str, cap: int) -> bool:
    values = bucket.values
    if values is None:
        bucket.values = {value: 1}
        return True
    count = values.get(value)
    if count is not None:
        values[value] = count + 1
        return True
    if len(values) >= cap:
        return False
    values[value] = 1
    return True


def _distinct_merge(into: Bucket, other: Bucket, cap: int) -> None:
    union = {**(into.values or {}), **(other.values or {})}
    if len(union) > cap:  # keep the same values whichever side is merged into which
        union = dict.fromkeys(sorted(union)[:cap], 1)
    into.values = union


def _frequency_merge(into: Bucket, other: Bucket, cap: int) -> None:
    counts = dict(into.values or {})
    for key, count in (other.values or {}).items():
        counts[key] = counts.get(key, 0) + count
    if len(counts) > cap:
        counts = dict(sorted(counts.items(), key=_by_count)[:cap])
    into.values = counts


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _distinct_value(buckets: Sequence[Bucket], now: float) -> Any:
    if len(buckets) == 1:
        return len(buckets[0].values or ())
    seen: set[str] = set()
    for bucket in buckets:
        seen.update(bucket.values or ())
    return len(seen)


def _frequency_value(buckets: Sequence[Bucket], now: float) -> Any:
    counts: dict[str, int] = {}
    for bucket in buckets:
        for key, count in (bucket.values or {}).items():
            counts[key] = counts.get(key, 0) + count
    if not counts:
        return None
    return key_value(min(counts.items(), key=_by_count)[0])


KIND_OPS: dict[str, KindOps] = {
    "count": KindOps(None, _count_new, _count_fold, _count_merge, _count_value, 0),
    "sum": KindOps(_number, _sum_new, _sum_fold, _sum_merge, _sum_value, 0),
    "average": KindOps(_number, _sum_new, _sum_fold, _sum_merge, _average_value),
    "min": KindOps(_number, _extreme_new, _min_fold, _min_merge, _min_value),
    "max": KindOps(_number, _extreme_new, _max_fold, _max_merge, _max_value),
    "first": KindOps(None, _stamped_new, _first_fold, _first_merge, _first_value),
    "last": KindOps(None, _stamped_new, _last_fold, _last_merge, _last_value, newest_only=True),
    "days_since_last": KindOps(
        None, _stamped_new, _last_fold, _last_merge, _days_value, newest_only=True
    ),
    "distinct_count": KindOps(
        value_key, _values_new, _distinct_fold, _distinct_merge, _distinct_value, 0
    ),
    "most_frequent": KindOps(
        value_key, _values_new, _frequency_fold, _frequency_merge, _frequency_value
    ),
}
