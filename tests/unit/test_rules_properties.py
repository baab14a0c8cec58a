"""Properties over random rules and random data (Hypothesis):

* AST -> text -> parse and AST -> JSON -> parse give the same AST;
* compiling a valid AST never fails, and evaluating it never raises, whatever the data holds.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from relevo.rules import ALL_ROOTS, compile_rule
from relevo.rules.ast import (
    ARITHMETIC,
    COMPARISONS,
    MEMBERSHIP,
    Binary,
    Call,
    Field,
    IsNull,
    ListExpr,
    Literal,
    Node,
    Not,
    bool_op,
    negate,
)
from relevo.rules.parse_json import parse_json
from relevo.rules.parse_text import parse_text
from relevo.rules.render import to_json, to_text
from relevo.rules.validate import validate

KEYS = ["plan", "age", "in", "null", "a b", "0", "x.y", "é", "", 'q"\\']
DATES = ["2026-01-01T00:00:00Z", "2026-01-01", "2025-12-31T23:59:59.5+02:00"]
PATTERNS = ["^a", "(?i)gold", "[0-9]+$", "^(a+)+$", "é.", ""]

# -- random rules ---------------------------------------------------------------------------

numbers = st.integers(-(2**63) + 1, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=8)
literals = scalars.map(Literal)
keys = st.sampled_from(KEYS) | st.integers(0, 3)
fields = st.one_of(
    st.just(Field(("segments",))),
    st.builds(
        lambda root, rest: Field((root, *rest)),
        st.sampled_from(sorted(ALL_ROOTS - {"segments"})),
        st.lists(keys, max_size=3),
    ),
)
leaves = literals | fields | st.just(Call("now", ()))


def _not_null(node: Node) -> Node:
    return Literal(0) if isinstance(node, Literal) and node.value is None else node


def _branches(inner: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    two = st.tuples(inner, inner)
    return st.one_of(
        st.builds(Not, inner),
        st.builds(negate, inner),
        st.builds(IsNull, inner, st.booleans()),
        st.builds(
            bool_op,
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=3),
        ),
        st.builds(
            lambda op, ab: Binary(op, _not_null(ab[0]), _not_null(ab[1])),
            st.sampled_from(sorted(COMPARISONS)),
            two,
        ),
        st.builds(
            lambda op, ab: Binary(op, *ab),
            st.sampled_from(sorted(MEMBERSHIP | ARITHMETIC | {"starts_with", "ends_with"})),
            two,
        ),
        st.builds(lambda a, p: Binary("matches", a, Literal(p)), inner, st.sampled_from(PATTERNS)),
        st.builds(ListExpr, st.lists(inner, max_size=3).map(tuple)),
        st.builds(
            lambda name, a: Call(name, (a,)),
            st.sampled_from(
                ["days", "hours", "minutes", "weeks", "to_date", "abs", "lower", "upper", "len"]
            ),
            inner,
        ),
        st.builds(
            lambda name, args: Call(name, tuple(args)),
            st.sampled_from(["max", "min", "coalesce"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda s: Call("date", (Literal(s),)), st.sampled_from(DATES)),
        st.builds(lambda s: Call("event_count", (Literal(s),)), st.text(max_size=6)),
    )


rules = st.recursive(leaves, _branches, max_leaves=12)

# -- random data ----------------------------------------------------------------------------

odd_zone = timezone(timedelta(hours=13, minutes=59))
datetimes = st.one_of(
    st.datetimes(timezones=st.none() | st.just(UTC) | st.just(odd_zone)),
    st.sampled_from(
        [
            datetime.min,
            datetime.max,
            datetime.min.replace(tzinfo=odd_zone),
            datetime.max.replace(tzinfo=UTC),
        ]
    ),
)
atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**40, -(10**40), 2**63, 0, -0.0, math.nan, math.inf, -math.inf, 1e308]),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["\ud800", "a\udfff", "{{7*7}}", "__import__('os')", "2026-01-01"]),
    datetimes,
    st.timedeltas() | st.sampled_from([timedelta.max, timedelta.min]),
)
values = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
        st.frozensets(st.text(max_size=3) | st.integers(), max_size=3),
    ),
    max_leaves=8,
)
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
data = st.fixed_dictionaries(
    {},
    optional={
        "traits": objects,
        "computed": objects,
        "profile": objects | st.fixed_dictionaries({"event_counts": objects}),
        "event": st.none() | objects,
        "context": objects | values,
        "segments": st.sets(st.text(max_size=4), max_size=3) | values,
        "now": datetimes | atoms,
    },
)


# -- properties -----------------------------------------------------------------------------

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(rules)
def test_text_round_trip(node: Node) -> None:
    validate(node, ALL_ROOTS)
    text = to_text(node)
    assert parse_text(text) == node, text
    assert to_text(parse_text(text)) == text


@SETTINGS
@given(rules)
def test_json_round_trip(node: Node) -> None:
    doc = json.loads(json.dumps(to_json(node)))
    assert parse_json(doc) == node, doc
    if isinstance(doc, dict):
        assert compile_rule(doc).ast == node


@SETTINGS
@given(rules, data)
def test_evaluation_never_raises(node: Node, facts: dict[str, Any]) -> None:
    rule = compile_rule(to_text(node))
    assert rule.evaluate(facts) in (True, False)
    rule.value(facts)


A, B = Field(("traits", "a")), Field(("traits", "b"))
EVERY_OPERATOR = [
    compile_rule(to_text(node))
    for node in [
        *(Binary(op, A, B) for op in sorted(COMPARISONS | MEMBERSHIP | ARITHMETIC)),
        Binary("starts_with", A, B),
        Binary("ends_with", A, B),
        *(Binary("matches", A, Literal(p)) for p in PATTERNS),
        *(Binary(op, A, Literal(c)) for op in sorted(COMPARISONS) for c in (1, 2.5, "x", True)),
        Binary("in", A, ListExpr((Literal(1), Literal("x"), Literal(True)))),
        Binary("not in", A, ListExpr((Literal("x"), Literal("y")))),
        Binary("in", A, ListExpr((Literal(1), ListExpr(())))),
        Not(A),
        negate(A),
        IsNull(A),
        bool_op("and", [A, B]),
        bool_op("or", [A, B, A]),
        *(
            Call(name, (A,))
            for name in [
                "days",
                "hours",
                "minutes",
                "weeks",
                "to_date",
                "abs",
                "lower",
                "upper",
                "len",
                "max",
                "min",
                "coalesce",
            ]
        ),
        *(Call(name, (A, B, A)) for name in ["max", "min", "coalesce"]),
        Binary("-", Call("now", ()), A),
        Binary("/", Binary("-", Call("now", ()), A), B),
    ]
]


@settings(max_examples=300, deadline=None)
@given(values, values, datetimes | atoms)
def test_every_operator_and_function_on_any_values(a: Any, b: Any, now: Any) -> None:
    facts = {"traits": {"a": a, "b": b}, "now": now}
    for rule in EVERY_OPERATOR:
        assert rule.evaluate(facts) in (True, False)
        rule.value(facts)


NASTY = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    2.5,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "\ud800",
    "2026-01-01",
    "{{7*7}}",
    datetime.min,
    datetime.max,
    datetime.min.replace(tzinfo=odd_zone),
    datetime.max.replace(tzinfo=UTC),
    datetime(2026, 1, 1),
    datetime(2026, 1, 1, tzinfo=odd_zone),
    timedelta(0),
    timedelta.max,
    timedelta.min,
    timedelta(days=1),
    [],
    [1, "x"],
    (1,),
    {},
    {"x": 1},
    {"x"},
    frozenset({1}),
    [[[[]]]],
    object(),
]


def test_every_operator_and_function_on_every_pair_of_nasty_values() -> None:
    for now in (None, datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=odd_zone)):
        for a in NASTY:
            for b in NASTY:
                facts = {"traits": {"a": a, "b": b}, "now": now}
                for rule in EVERY_OPERATOR:
                    assert rule.evaluate(facts) in (True, False), (rule, a, b)
                    rule.value(facts)


@SETTINGS
@given(data)
def test_realistic_rules_never_raise_on_any_data(facts: dict[str, Any]) -> None:
    for rule in REALISTIC:
        assert rule.evaluate(facts) in (True, False)


REALISTIC = [
    compile_rule(text)
    for text in [
        'traits.plan == "gold" and computed.age >= 3',
        "profile.plan >= now() - days(30)",
        'event_count("plan") > 2 or "vip" in segments',
        'traits.plan in ["gold", 1, 2.5, true] and traits.age not in [1, 2]',
        "traits.age / computed.age % 3 > traits.plan * 2 - 1",
        'lower(traits.plan) starts_with "g" and upper(traits.plan) ends_with "D"',
        'traits.plan matches "(?i)^g" and traits.plan contains "o"',
        'max(traits.plan, traits.age, 3) == min(traits["a b"], computed.age)',
        'to_date(traits.plan) < now() and abs(traits.age) <= len(traits["0"])',
        'coalesce(traits.null, context.plan, "x") != traits.in[0].plan',
        "now() - to_date(traits.plan) > weeks(traits.age) / traits.age",
        "traits.plan == traits.age or traits.plan < traits.age or traits.plan in traits.age",
        "not traits.plan is null and context is not null and event.plan",
        "-traits.age + -computed.age * -1 > -(traits.plan)",
    ]
]
