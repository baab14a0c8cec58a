"""The two forms of a rule: parsing, precedence, equal ASTs, round-trips and error positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import relevo.rules
from relevo.errors import ValidationError
from relevo.rules import ALL_ROOTS, RuleError, compile_rule
from relevo.rules.ast import Binary, BoolOp, Call, Field, IsNull, ListExpr, Literal, Neg, Not
from relevo.rules.functions import FUNCTIONS
from relevo.rules.parse_json import JSON_OPS, parse_json
from relevo.rules.parse_text import parse_text
from relevo.rules.render import to_json, to_text

T = Field(("traits", "a"))
U = Field(("traits", "b"))
V = Field(("traits", "c"))


def error_of(source: object, **kwargs: object) -> RuleError:
    with pytest.raises(RuleError) as caught:
        compile_rule(source, **kwargs)  # type: ignore[arg-type]
    return caught.value


# -- precedence and shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("traits.a or traits.b and traits.c", BoolOp("or", (T, BoolOp("and", (U, V))))),
        ("(traits.a or traits.b) and traits.c", BoolOp("and", (BoolOp("or", (T, U)), V))),
        ("not traits.a and traits.b", BoolOp("and", (Not(T), U))),
        ("not traits.a == 1", Not(Binary("==", T, Literal(1)))),
        ("traits.a + traits.b * traits.c", Binary("+", T, Binary("*", U, V))),
        ("(traits.a + traits.b) * traits.c", Binary("*", Binary("+", T, U), V)),
        ("traits.a - traits.b - traits.c", Binary("-", Binary("-", T, U), V)),
        ("traits.a - (traits.b - traits.c)", Binary("-", T, Binary("-", U, V))),
        ("traits.a / traits.b % 2", Binary("%", Binary("/", T, U), Literal(2))),
        ("-traits.a * 2", Binary("*", Neg(T), Literal(2))),
        (
            "traits.a + 1 > traits.b * 2",
            Binary(">", Binary("+", T, Literal(1)), Binary("*", U, Literal(2))),
        ),
        (
            "traits.a == 1 or traits.b != 2",
            BoolOp("or", (Binary("==", T, Literal(1)), Binary("!=", U, Literal(2)))),
        ),
        ("traits.a and traits.b and traits.c", BoolOp("and", (T, U, V))),
        ("traits.a and (traits.b and traits.c)", BoolOp("and", (T, U, V))),
        ("traits.a is null", IsNull(T)),
        ("traits.a is not null", IsNull(T, negated=True)),
        ("not traits.a is null", Not(IsNull(T))),
        ("traits.a not in [1, 2]", Binary("not in", T, ListExpr((Literal(1), Literal(2))))),
        ("traits.a in traits.b", Binary("in", T, U)),
        ('traits.a contains "x"', Binary("contains", T, Literal("x"))),
        ('traits.a starts_with "x"', Binary("starts_with", T, Literal("x"))),
        ('traits.a ends_with "x"', Binary("ends_with", T, Literal("x"))),
        ('traits.a matches "^x"', Binary("matches", T, Literal("^x"))),
        ("-3", Literal(-3)),
        ("- 3", Literal(-3)),
        ("-(3)", Literal(-3)),
        ("--3", Literal(3)),
        ("-2.5e3", Literal(-2500.0)),
        ("1.0", Literal(1.0)),
        ("true", Literal(True)),
        ("null", Literal(None)),
        ('"a \\"q\\" \\u00e9\\n"', Literal('a "q" é\n')),
        ("[]", ListExpr(())),
        ("max(traits.a, 2)", Call("max", (T, Literal(2)))),
        ("now()", Call("now", ())),
        ('traits["first name"][0]', Field(("traits", "first name", 0))),
        ("event.properties.in", Field(("event", "properties", "in"))),
        ("segments", Field(("segments",))),
    ],
)
def test_text_parses_to_the_expected_tree(text: str, tree: object) -> None:
    assert parse_text(text) == tree


def test_comparisons_do_not_chain() -> None:
    err = error_of("traits.a < traits.b < traits.c")
    assert err.details[0].location == "line 1, column 21"
    assert "unexpected '<'" in err.details[0].message


def test_literals_keep_their_type() -> None:
    # 1 == 1.0 == True in Python; as rule literals they differ
    assert Literal(1) != Literal(1.0)
    assert Literal(1) != Literal(True)
    assert Literal(0) != Literal(False)
    assert parse_text("1") != parse_text("1.0")


# -- both forms give one AST ----------------------------------------------------------------

PAIRS = [
    (
        'traits.plan == "gold" and computed.orders_30d >= 3',
        {
            "and": [
                {"==": [{"var": "traits.plan"}, "gold"]},
                {">=": [{"var": "computed.orders_30d"}, 3]},
            ]
        },
    ),
    ('"vip" in segments', {"in": ["vip", {"var": "segments"}]}),
    (
        "profile.last_seen >= now() - days(30)",
        {">=": [{"var": "profile.last_seen"}, {"-": [{"now": []}, {"days": [30]}]}]},
    ),
    ('event_count("Product Viewed") > 2', {">": [{"event_count": ["Product Viewed"]}, 2]}),
    ("not traits.vip", {"not": [{"var": "traits.vip"}]}),
    ("not traits.vip", {"not": {"var": "traits.vip"}}),
    ("-traits.x", {"-": [{"var": "traits.x"}]}),
    ("-3", {"-": [3]}),
    ("traits.x is not null", {"is not null": [{"var": "traits.x"}]}),
    ("traits.x is null", {"is null": {"var": "traits.x"}}),
    ('event.name not in ["A", "B"]', {"not in": [{"var": "event.name"}, ["A", "B"]]}),
    ('traits["first name"] == "Ada"', {"==": [{"var": ["traits", "first name"]}, "Ada"]}),
    ("event.properties.items[0].sku", {"var": "event.properties.items.0.sku"}),
    ("event.properties.items[0]", {"var": ["event", "properties", "items", 0]}),
    (
        "traits.a and traits.b and traits.c",
        {"and": [{"and": [{"var": "traits.a"}, {"var": "traits.b"}]}, {"var": "traits.c"}]},
    ),
    ("traits.a", {"or": [{"var": "traits.a"}]}),
    ('coalesce(traits.a, "x")', {"coalesce": [{"var": "traits.a"}, "x"]}),
    (
        'date("2026-01-01T00:00:00Z") < now()',
        {"<": [{"date": ["2026-01-01T00:00:00Z"]}, {"now": []}]},
    ),
]


@pytest.mark.parametrize(("text", "doc"), PAIRS)
def test_text_and_json_parse_to_equal_asts(text: str, doc: dict[str, object]) -> None:
    assert parse_text(text) == parse_json(doc)
    assert compile_rule(text) == compile_rule(doc)


@pytest.mark.parametrize(("text", "doc"), PAIRS)
def test_round_trips(text: str, doc: dict[str, object]) -> None:
    rule = compile_rule(text)
    assert compile_rule(rule.text).ast == rule.ast
    through_json = json.loads(json.dumps(rule.to_json()))
    assert compile_rule(through_json).ast == rule.ast
    assert compile_rule(doc).text == rule.text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("traits.a-(traits.b-traits.c)", "traits.a - (traits.b - traits.c)"),
        ("((traits.a - traits.b)) - traits.c", "traits.a - traits.b - traits.c"),
        ("(traits.a)", "traits.a"),
        ("not (traits.a == 1)", "not traits.a == 1"),
        ("(not traits.a) == true", "(not traits.a) == true"),
        ("(traits.a or traits.b) and traits.c", "(traits.a or traits.b) and traits.c"),
        ("-(traits.a + 1)", "-(traits.a + 1)"),
        ("traits.a - -3", "traits.a - -3"),
        ('traits["plan"]', "traits.plan"),
        ('traits["a b"]', 'traits["a b"]'),
        ('"é\\u0001"', '"é\\u0001"'),
        ("1e+20", "1e+20"),
        ("(traits.a == 1) is null", "(traits.a == 1) is null"),
    ],
)
def test_text_is_printed_canonically(text: str, canonical: str) -> None:
    assert to_text(parse_text(text)) == canonical
    assert parse_text(canonical) == parse_text(text)


def test_json_field_paths_use_the_list_form_when_a_key_is_not_a_name() -> None:
    assert to_json(parse_text('traits["a.b"]')) == {"var": ["traits", "a.b"]}
    assert to_json(parse_text('traits["0"]')) == {"var": ["traits", "0"]}
    assert to_json(parse_text("traits.x[2]")) == {"var": "traits.x.2"}


# -- errors: where and why ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "location", "message"),
    [
        ("traits.plan == ", "line 1, column 16", "unexpected end of rule; expected"),
        ("traits.plan = 1", "line 1, column 13", "unexpected character '='"),
        ("traits.plan == 'gold'", "line 1, column 16", "strings use double quotes"),
        ('traits.plan == "gold', "line 1, column 16", "unterminated string"),
        ("traits.plan ==\n  ) 1", "line 2, column 3", "unexpected ')'"),
        ("(traits.a", "line 1, column 10", "expected ')'"),
        ("f(1,", "line 1, column 5", "unexpected end of rule"),
        ("traits.a[1.5]", "line 1, column 10", "a list index must be a whole number"),
        ('"bad \\q escape"', "line 1, column 6", "invalid string: Invalid \\escape"),
        ("1e999", "line 1, column 1", "number is out of range"),
        ("   ", "line 1, column 1", "rule is empty"),
        ("foo.bar == 1", "line 1, column 1", "unknown field root 'foo'"),
        ("traits.plan == 1 and bogus(2)", "line 1, column 22", "unknown function 'bogus'"),
        ("max()", "line 1, column 1", "max() takes at least 1 argument, not 0"),
        ("days(1, 2)", "line 1, column 1", "days() takes 1 argument, not 2"),
        ("traits.x == null", "line 1, column 1", "use 'is null'"),
        ("null != traits.x", "line 1, column 1", "use 'is null'"),
        ("event_count(traits.x) > 1", "line 1, column 1", "event_count() takes a string literal"),
        ('date("yesterday")', "line 1, column 1", "date() cannot read 'yesterday'"),
        ("traits.x matches traits.y", "line 1, column 1", "matches takes a string literal"),
        ('traits.x matches "a("', "line 1, column 1", "invalid regular expression 'a(': missing )"),
        ('traits.x matches "(a)\\\\1"', "line 1, column 1", "invalid regular expression"),
        ("segments.vip", "line 1, column 1", "segments is a set of segment names"),
        ("traits.x == 99999999999999999999", "line 1, column 13", "64-bit range"),
    ],
)
def test_text_errors_say_where_and_why(text: str, location: str, message: str) -> None:
    err = error_of(text)
    assert isinstance(err, ValidationError)
    assert err.code == "invalid_rule"
    detail = err.details[0]
    assert (detail.location, detail.code) == (location, "invalid_rule")
    assert message in detail.message
    assert location in str(err)


def test_every_problem_is_reported() -> None:
    err = error_of("foo.x == 1 and bar(1) and traits.__class__ == 2")
    assert [d.location for d in err.details] == [
        "line 1, column 1",
        "line 1, column 16",
        "line 1, column 27",
    ]
    assert "and 2 more problems" in err.message


def test_long_regex_is_refused() -> None:
    err = error_of('traits.x matches "' + "a" * 257 + '"')
    assert "longer than 256" in err.details[0].message


def test_size_limits() -> None:
    assert "longer than" in error_of("traits.a == 1 or " * 2000 + "true").message
    assert "nested more than" in error_of("not " * 150 + "true").message
    assert (
        "nested more than" in error_of("(" * 200 + "-traits.a" + ")" * 200 + " + 1" * 120).message
    )
    deep: object = True
    for _ in range(150):
        deep = {"not": [deep]}
    assert "nested more than" in error_of(deep).message


def test_roots_are_chosen_by_the_caller() -> None:
    segment_roots = ALL_ROOTS - {"event"}
    err = error_of('event.name == "x"', roots=segment_roots)
    assert "'event' cannot be used in this rule" in err.details[0].message
    err = error_of('event_count("x") > 1', roots=frozenset({"traits"}))
    assert "event_count() reads 'profile'" in err.details[0].message
    assert compile_rule("traits.a", roots=frozenset({"traits"})).fields == {"traits.a"}
    with pytest.raises(ValueError, match="unknown rule roots"):
        compile_rule("traits.a", roots=frozenset({"traits", "os"}))


@pytest.mark.parametrize(
    ("doc", "location", "message"),
    [
        ({"and": [{"===": [1, 1]}]}, '$.and[0]["==="]', "unknown operator '==='"),
        ({"!": [True]}, '$["!"]', "did you mean 'not'?"),
        ({"eval": ["1"]}, "$.eval", "unknown operator 'eval'"),
        ({"==": [1]}, '$["=="]', "'==' takes two operands, not 1"),
        ({"not": [1, 2]}, "$.not", "'not' takes one operand, not 2"),
        ({"and": []}, "$.and", "'and' needs at least one operand"),
        ({"==": [1, 2], "!=": [1, 2]}, "$", "exactly one key, not 2"),
        ({}, "$", "exactly one key, not 0"),
        ({"var": ""}, "$.var", "empty field path"),
        ({"var": "traits..x"}, "$.var", "empty key in field path"),
        ({"var": 3}, "$.var", 'a field is {"var"'),
        ({"var": ["traits", 1.5]}, "$.var[1]", "a field path key is a string or an index"),
        ({"var": ["traits", -1]}, "$.var[1]", "cannot be negative"),
        ({"==": [{"var": "traits.__class__"}, 1]}, '$["=="][0]', "'__class__' is not allowed"),
        ({"or": [True, {"bogus": []}]}, "$.or[1].bogus", "unknown operator 'bogus'"),
        ({"max": []}, "$", "max() takes at least 1 argument"),
        ({"==": [{"var": "traits.a"}, None]}, "$", "use 'is null'"),
        ({"==": [1, float("nan")]}, '$["=="][1]', "number must be finite"),
        ({"in": ["a", {"x"}]}, "$.in[1]", "not a JSON value: set"),
    ],
)
def test_json_errors_give_the_json_path(doc: object, location: str, message: str) -> None:
    err = error_of(doc)
    assert err.details[0].location == location
    assert message in err.details[0].message


# -- the public surface ---------------------------------------------------------------------


def test_the_public_api() -> None:
    assert sorted(relevo.rules.__all__) == [
        "ALL_ROOTS",
        "Rule",
        "RuleError",
        "compile_rule",
        "is_json_rule",
    ]
    assert issubclass(RuleError, ValidationError)
    assert {"traits", "computed", "profile", "event", "context", "segments"} == ALL_ROOTS


def test_every_function_and_operator_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
    missing = [f"{name}(" for name in FUNCTIONS if f"`{name}(" not in docs]
    missing += [op for op in JSON_OPS if op not in docs]
    assert not missing, f"docs/rules.md does not describe {missing}"
