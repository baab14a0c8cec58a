"""What rules compute: every operator and function, the null and type rules, and what a
compiled rule reports about itself (fields, event names, clock use)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from relevo.rules import Rule, compile_rule

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

DATA: dict[str, Any] = {
    "traits": {
        "plan": "gold",
        "email": "Ada@Acme.com",
        "age": 36,
        "score": 2.5,
        "vip": True,
        "blocked": False,
        "tags": ["beta", "early"],
        "prefs": {"color": "blue"},
        "nothing": None,
        "zero": 0,
        "signup": "2026-02-01T00:00:00Z",
        "first name": "Ada",
        "items": [{"sku": "A1"}, {"sku": "B2"}],
        "naive": datetime(2026, 2, 28, 12, 0),
    },
    "computed": {"orders_30d": 4, "ltv": 120.0},
    "profile": {
        "first_seen": datetime(2025, 1, 1, tzinfo=UTC),
        "last_seen": datetime(2026, 2, 25, tzinfo=UTC),
        "events_applied": 42,
        "event_counts": {"Product Viewed": 7, "Order Completed": 2},
        "consent": {"marketing": True},
        "context": {"country": "FR"},
    },
    "event": {
        "type": "track",
        "name": "Product Viewed",
        "properties": {"price": 19.99, "category": "shoes"},
        "context": {"locale": "fr-FR"},
    },
    "context": {"channel": "web"},
    "segments": {"vip", "newsletter"},
    "now": NOW,
}


def value(text: str, data: dict[str, Any] = DATA) -> Any:
    return compile_rule(text).value(data)


def holds(text: str, data: dict[str, Any] = DATA) -> bool:
    return compile_rule(text).evaluate(data)


# -- comparisons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('traits.plan == "gold"', True),
        ('traits.plan != "gold"', False),
        ('traits.plan == "silver"', False),
        ("traits.age == 36", True),
        ("traits.age == 36.0", True),
        ("traits.age != 36", False),
        ("traits.vip == true", True),
        ("traits.vip == 1", False),  # a boolean is not a number
        ("traits.zero == false", False),
        ('traits.age == "36"', False),  # nor is a string
        ("traits.age < 40", True),
        ("traits.age <= 36", True),
        ("traits.age > 36", False),
        ("traits.age >= 36", True),
        ("40 > traits.age", True),  # constant on the left
        ("traits.score < traits.age", True),
        ('traits.plan < "silver"', True),
        ('"a" < 3', False),  # type mismatch: false, never an error
        ('"a" >= 3', False),
        ("traits.vip > false", False),  # booleans do not order
        ('traits.tags == ["beta", "early"]', True),
        ("traits.prefs == traits.prefs", True),
        ("traits.tags == traits.prefs", False),
        ("[1, [2.0]] == [1.0, [2]]", True),
        ("[1] == [true]", False),  # item by item, by the same rules
        ("[traits.prefs, 1] == [profile.consent, 1]", False),
        ("[traits.prefs] == [traits.prefs]", True),
        ("profile.last_seen < now()", True),
        ('profile.last_seen == to_date("2026-02-25T01:00:00+01:00")', True),  # zones compare
        ("traits.naive < now()", True),  # naive datetimes are UTC
        ('traits.naive == to_date("2026-02-28T12:00:00Z")', True),
        ("days(2) > hours(47)", True),
        ("days(1) == hours(24)", True),
        ("profile.last_seen > 3", False),
    ],
)
def test_comparisons(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('traits.missing == "gold"', False),
        ('traits.missing != "gold"', True),  # != is exactly `not ==`
        ("traits.missing < 3", False),
        ("traits.missing >= 3", False),
        ("traits.nothing == traits.missing", False),  # null equals nothing, not even null
        ("traits.nothing != traits.missing", True),
        ("traits.missing is null", True),
        ("traits.nothing is null", True),
        ("traits.plan is null", False),
        ("traits.plan is not null", True),
        ("traits.missing is not null", False),
        ("traits.missing.deeper.still is null", True),
        ("traits.plan.deeper is null", True),  # indexing a string gives null
        ("traits.tags[5] is null", True),
        ("traits.tags.x is null", True),
        ("event.missing.x is null", True),
    ],
)
def test_null_semantics(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_missing_roots_and_a_missing_event_read_as_null() -> None:
    assert holds("event.name is null", {"event": None})
    assert holds("traits.plan is null", {})
    assert not holds('"vip" in segments', {})
    assert holds("now() is null", {})


# -- boolean logic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("traits.vip and traits.age > 30", True),
        ("traits.vip and traits.blocked", False),
        ("traits.blocked or traits.vip", True),
        ("traits.blocked or traits.missing", False),
        ("not traits.blocked", True),
        ("not traits.missing", True),  # null is falsy
        ("not traits.tags", False),  # a non-empty list is truthy
        ("not traits.zero", True),
        ("traits.vip and traits.vip and traits.vip and traits.blocked", False),
        ("traits.blocked or traits.blocked or traits.blocked or traits.vip", True),
        ("traits.plan", True),  # the top-level result is coerced to bool
        ('traits.plan == "gold" and (traits.blocked or computed.orders_30d >= 3)', True),
    ],
)
def test_boolean_logic(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_boolean_operators_return_booleans() -> None:
    assert value("traits.plan and traits.age") is True
    assert value("traits.missing or traits.zero") is False


# -- membership and string matching ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('traits.plan in ["gold", "platinum"]', True),
        ('traits.plan not in ["gold", "platinum"]', False),
        ("traits.age in [35, 36]", True),
        ("traits.age in [35.0, 36.0]", True),
        ("traits.vip in [1, 2]", False),  # true is not 1
        ("traits.zero in [false]", False),
        ('traits.age in ["36"]', False),
        ("traits.missing in [1, 2]", False),
        ("traits.missing not in [1, 2]", True),
        ('traits.plan in ["gold", 1, traits.age]', True),  # items may be expressions
        ('"beta" in traits.tags', True),
        ('"alpha" in traits.tags', False),
        ('"color" in traits.prefs', True),  # the keys of an object
        ('"blue" in traits.prefs', False),
        ('"Acme" in traits.email', True),  # a substring
        ('"vip" in segments', True),
        ('"gone" in segments', False),
        ('"gone" not in segments', True),
        ('"x" in traits.missing', False),
        ('"x" not in traits.missing', True),
        ("1 in traits.age", False),
        ("36 in [traits.age]", True),
        ('traits.tags contains "beta"', True),
        ('traits.email contains "@"', True),
        ('traits.email contains "@example"', False),
        ('traits.email starts_with "Ada"', True),
        ('traits.email starts_with "ada"', False),
        ('lower(traits.email) starts_with "ada"', True),
        ('traits.email ends_with "@Acme.com"', True),
        ('traits.age ends_with "6"', False),
        ('traits.email matches "^[A-Za-z]+@acme\\\\.com$"', False),
        ('traits.email matches "(?i)^[a-z]+@acme\\\\.com$"', True),
        ('traits.email matches "acme"', False),  # case-sensitive search, unanchored
        ('traits.email matches "Acme"', True),
        ('traits.age matches "3"', False),  # only strings match
        ('traits.missing matches "."', False),
    ],
)
def test_membership_and_string_matching(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_segments_may_be_any_collection() -> None:
    assert holds('"vip" in segments', {"segments": ["vip"]})
    assert holds('"vip" in segments', {"segments": frozenset({"vip"})})


def test_regex_is_linear_time_on_a_classic_catastrophic_pattern() -> None:
    # (a+)+$ backtracks exponentially in Python's re; RE2 answers at once
    rule = compile_rule('traits.s matches "^(a+)+$"')
    assert not rule.evaluate({"traits": {"s": "a" * 50_000 + "!"}})


# -- arithmetic and dates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("traits.age + 4", 40),
        ("traits.age - 6", 30),
        ("traits.age * 2", 72),
        ("traits.age / 4", 9.0),
        ("traits.age % 5", 1),
        ("traits.score * 2", 5.0),
        ("-traits.age", -36),
        ('traits.plan + "!"', "gold!"),
        ("traits.age / 0", None),  # division by zero is null
        ("traits.age % 0", None),
        ("traits.age / 0.0", None),
        ('traits.age + "1"', None),  # kinds that do not add are null
        ("traits.plan * 3", None),  # no string repetition
        ("traits.missing + 1", None),
        ("-traits.plan", None),
        ("traits.vip + 1", None),
        ("computed.ltv / computed.orders_30d", 30.0),
        ("now() - days(1)", NOW - timedelta(days=1)),
        ("now() + hours(2)", NOW + timedelta(hours=2)),
        ("now() - minutes(30)", NOW - timedelta(minutes=30)),
        ("now() - weeks(2)", NOW - timedelta(weeks=2)),
        ("days(1.5)", timedelta(days=1.5)),
        ("days(1) + hours(1)", timedelta(hours=25)),
        ("days(1) * 2", timedelta(days=2)),
        ("2 * days(1)", timedelta(days=2)),
        ("days(3) / days(1)", 3.0),
        ("days(3) / 3", timedelta(days=1)),
        ("days(3) / 0", None),
        ("(now() - profile.last_seen) / days(1)", 4.5),
        ("now() - profile.last_seen", timedelta(days=4, hours=12)),
        ("-days(1)", timedelta(days=-1)),
        ('days("3")', None),
        ("days(traits.missing)", None),
        ("days(10000000000)", None),  # overflow is null
        ("now() + days(3000000)", None),
        ("1e308 * 10", float("inf")),
    ],
)
def test_arithmetic_and_durations(text: str, expected: Any) -> None:
    result = value(text)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('date("2026-01-01T00:00:00Z")', datetime(2026, 1, 1, tzinfo=UTC)),
        ('date("2026-01-01")', datetime(2026, 1, 1, tzinfo=UTC)),
        ('to_date("2026-01-01T01:00:00+01:00")', datetime(2026, 1, 1, tzinfo=UTC)),
        ("to_date(traits.signup)", datetime(2026, 2, 1, tzinfo=UTC)),
        ("to_date(0)", datetime(1970, 1, 1, tzinfo=UTC)),
        ("to_date(profile.first_seen)", datetime(2025, 1, 1, tzinfo=UTC)),
        ('to_date("not a date")', None),
        ("to_date(traits.vip)", None),
        ("to_date(1e20)", None),
        ("to_date(traits.missing)", None),
    ],
)
def test_dates(text: str, expected: Any) -> None:
    assert value(text) == expected


def test_date_math_in_conditions() -> None:
    assert holds("profile.last_seen >= now() - days(30)")
    assert not holds("profile.last_seen >= now() - days(3)")
    assert holds("to_date(traits.signup) > now() - days(30)")
    assert holds('now() > date("2026-01-01T00:00:00Z")')
    assert holds("now() - profile.first_seen > weeks(52)")


class _BrokenZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise ValueError("no offset")


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (datetime(2026, 2, 25, tzinfo=UTC), True),
        (datetime(2026, 2, 20, tzinfo=UTC), False),
        # what is not two UTC datetimes takes the slow path: offsets and naive (UTC) count
        (datetime(2026, 2, 22, 23, 30, tzinfo=timezone(timedelta(hours=-1))), True),
        (datetime(2026, 2, 22, 0, 30, tzinfo=timezone(timedelta(hours=1))), False),
        (datetime(2026, 2, 22, 12, 0), True),
        (datetime(2026, 2, 22, 11, 59), False),
        (datetime(2026, 2, 25, tzinfo=_BrokenZone()), False),  # never raises
        ("2026-02-25", False),  # a string is not a datetime
        (None, False),
    ],
)
def test_comparing_two_computed_datetimes(seen: Any, expected: bool) -> None:
    data = {**DATA, "profile": {"last_seen": seen}}
    assert holds("profile.last_seen >= now() - days(7)", data) is expected
    assert holds("now() - days(7) <= profile.last_seen", data) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(1, 1.0, True), (2, True, False), (True, True, False), ("b", "a", True), (2.5, 2.5, True)],
)
def test_comparing_two_computed_values_keeps_the_rules_kinds(
    a: Any, b: Any, expected: bool
) -> None:
    assert holds("traits.a >= traits.b", {"traits": {"a": a, "b": b}}) is expected


# -- functions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('event_count("Product Viewed")', 7),
        ('event_count("Never Seen")', 0),
        ("max(1, 5, 3)", 5),
        ("max(traits.age, computed.orders_30d)", 36),
        ("max(traits.missing, 2)", 2),
        ("max(traits.missing)", None),
        ('max("a", "b")', "b"),
        ('max(1, "b")', None),
        ("max(traits.tags)", "early"),
        ("max(days(1), hours(30))", timedelta(hours=30)),
        ("max(now(), profile.last_seen)", NOW),
        ("min(1, 5, 3)", 1),
        ("min(traits.score, 10)", 2.5),
        ("abs(-3)", 3),
        ("abs(traits.score - 10)", 7.5),
        ("abs(-days(1))", timedelta(days=1)),
        ('abs("x")', None),
        ("lower(traits.email)", "ada@acme.com"),
        ("upper(traits.plan)", "GOLD"),
        ("upper(traits.age)", None),
        ("len(traits.tags)", 2),
        ("len(traits.email)", 12),
        ("len(traits.prefs)", 1),
        ("len(segments)", 2),
        ("len(traits.age)", None),
        ("len(traits.missing)", None),
        ('coalesce(traits.missing, traits.nothing, "fallback")', "fallback"),
        ("coalesce(traits.zero, 5)", 0),
        ("coalesce(traits.missing)", None),
        ("now()", NOW),
    ],
)
def test_functions(text: str, expected: Any) -> None:
    assert value(text) == expected


def test_event_count_without_counters_is_zero_and_bad_counters_are_null() -> None:
    rule = compile_rule('event_count("A")')
    assert rule.value({}) == 0
    assert rule.value({"profile": {"event_counts": None}}) == 0
    assert rule.value({"profile": {"event_counts": {"A": "many"}}}) is None


def test_now_comes_from_the_data_and_naive_is_utc() -> None:
    rule = compile_rule("now()")
    assert rule.value({"now": datetime(2026, 1, 1)}) == datetime(2026, 1, 1, tzinfo=UTC)
    assert rule.value({"now": "2026-01-01"}) is None


@pytest.mark.parametrize(
    "text",
    [
        'event.name == "Product Viewed"',
        'event.type == "track" and event.properties.price > 10',
        'event.properties.category in ["shoes", "bags"]',
        'event.context.locale starts_with "fr"',
        'context.channel == "web"',
        "profile.events_applied > 40",
        "profile.consent.marketing",
        'profile.context.country == "FR"',
        'traits["first name"] == "Ada"',
        'traits.items[1].sku == "B2"',
        'traits.prefs["color"] == "blue"',
    ],
)
def test_field_access_over_every_root(text: str) -> None:
    assert holds(text)


# -- what a rule reports about itself -------------------------------------------------------


def test_fields_are_cut_to_root_and_first_key() -> None:
    rule = compile_rule(
        'traits.plan == "gold" and computed.orders_30d >= 3 and event.properties.price > 1'
        ' and "vip" in segments and event_count("A") > 1 and traits["a b"].c'
    )
    assert rule.fields == {
        "traits.plan",
        "computed.orders_30d",
        "event.properties",
        "segments",
        "profile.event_counts",
        "traits.a b",
    }


def test_event_names_for_indexing() -> None:
    rule = compile_rule(
        'event.name == "Product Viewed" or event.name in ["Order Completed", "Refund"]'
        ' or "Signed Up" == event.name or event_count("Page Viewed") > 3'
    )
    assert rule.event_names == {
        "Product Viewed",
        "Order Completed",
        "Refund",
        "Signed Up",
        "Page Viewed",
    }
    assert compile_rule('event.type == "track"').event_names == frozenset()
    assert compile_rule('["A", "B"] contains event.name').event_names == {"A", "B"}


def test_uses_now() -> None:
    assert compile_rule("profile.last_seen > now() - days(7)").uses_now
    assert not compile_rule('traits.plan == "gold"').uses_now
    assert not compile_rule('date("2026-01-01") < profile.last_seen').uses_now


def test_constant_parts_are_computed_once() -> None:
    rule = compile_rule('traits.x > days(30) and traits.y < date("2026-01-01")')
    assert rule.evaluate({"traits": {"x": timedelta(days=31), "y": datetime(2025, 1, 1)}})


def test_a_rule_is_a_value() -> None:
    a = compile_rule('traits.plan == "gold"')
    b = compile_rule({"==": [{"var": "traits.plan"}, "gold"]})
    assert a == b and hash(a) == hash(b)
    assert repr(a) == "Rule('traits.plan == \"gold\"')"
    assert isinstance(a, Rule)


def test_absurdly_deep_data_is_not_equal_rather_than_a_crash() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    rule = compile_rule("traits.a == traits.b or 1 in traits.a")
    assert rule.evaluate({"traits": {"a": deep, "b": deep}}) is False


class _NoTruth:
    def __bool__(self) -> bool:
        raise ValueError("truth value is ambiguous")


def test_values_that_refuse_bool_are_false() -> None:
    data = {"traits": {"x": _NoTruth()}}
    assert compile_rule("traits.x").evaluate(data) is False
    assert compile_rule("not traits.x").evaluate(data) is True
    assert compile_rule("traits.x or traits.y").evaluate(data) is False


def test_a_list_value_cannot_be_changed_by_the_caller() -> None:
    rule = compile_rule("[1, 2]")
    first = rule.value({})
    first.append(3)
    assert rule.value({}) == [1, 2]
