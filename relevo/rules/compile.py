"""A validated AST -> one Python closure, built once; evaluation never walks the tree.

Each node becomes a function of the data mapping. Constant subtrees (``days(30)``,
``date("2026-01-01")``, ``["gold", "silver"]``) are computed here, once, and the common shapes
(a field against a constant, membership in a constant list, a field path of one or two keys)
get closures of their own, so a typical rule costs a few microseconds to evaluate.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from relevo.rules import values as v
from relevo.rules.ast import (
    Binary,
    BoolOp,
    Call,
    Field,
    IsNull,
    ListExpr,
    Literal,
    Neg,
    Node,
    Not,
    PathKey,
)
from relevo.rules.functions import FUNCTIONS
from relevo.rules.regex import compile_regex, regex_search

Data = Mapping[str, Any]
Fn = Callable[[Data], Any]

_EMPTY: Data = {}
_STRING_CONTAINERS = frozenset({set, frozenset, dict, list, tuple, str})

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": v.equal,
    "!=": v.not_equal,
    "<": v.less,
    "<=": v.less_equal,
    ">": v.greater,
    ">=": v.greater_equal,
    "in": v.member,
    "not in": lambda a, b: not v.member(a, b),
    "contains": lambda a, b: v.member(b, a),
    "starts_with": v.starts_with,
    "ends_with": v.ends_with,
    "+": v.add,
    "-": v.subtract,
    "*": v.multiply,
    "/": v.divide,
    "%": v.modulo,
}
_BOOLEAN_OPS = frozenset(_BINARY) - {"+", "-", "*", "/", "%"} | {"matches"}
_PYTHON: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True, slots=True)
class Compiled:
    fn: Fn
    constant: bool = False  # fn ignores the data and always returns ``value``
    value: Any = None
    boolean: bool = False  # fn always returns a bool
    field: tuple[str, str] | None = None  # fn reads ``root.key``: comparisons can inline it


def compile_node(node: Node) -> tuple[Fn, Fn]:
    """Two closures over a data mapping: ``node``'s value, and its value as a boolean
    (truthiness). ``node`` must be validated."""
    compiled = _compile(node)
    return compiled.fn, compiled.fn if compiled.boolean else _as_bool(compiled.fn)


def _constant(value: Any) -> Compiled:
    if isinstance(value, list):  # a fresh list each time: no caller can change the rule
        frozen = tuple(value)
        return Compiled(lambda d: list(frozen), True, value)
    return Compiled(lambda d: value, True, value, isinstance(value, bool))


def _fold(compiled: Compiled, *parts: Compiled) -> Compiled:
    """``compiled`` computed once if every part it depends on is constant."""
    if all(part.constant for part in parts):
        return _constant(compiled.fn(_EMPTY))
    return compiled


def _compile(node: Node) -> Compiled:
    if isinstance(node, Literal):
        return _constant(node.value)
    if isinstance(node, Field):
        path = node.path
        simple = len(path) == 2 and isinstance(path[1], str)
        return Compiled(_field(path), field=(str(path[0]), str(path[1])) if simple else None)
    if isinstance(node, ListExpr):
        items = [_compile(item) for item in node.items]
        fns = [item.fn for item in items]
        return _fold(Compiled(lambda d: [f(d) for f in fns]), *items)
    if isinstance(node, Call):
        return _call(node)
    if isinstance(node, Not):
        operand = _compile(node.operand)
        f = operand.fn
        if operand.boolean:
            return _fold(Compiled(lambda d: not f(d), boolean=True), operand)
        return _fold(Compiled(lambda d: not v.truthy(f(d)), boolean=True), operand)
    if isinstance(node, Neg):
        operand = _compile(node.operand)
        f = operand.fn
        return _fold(Compiled(lambda d: v.negative(f(d))), operand)
    if isinstance(node, IsNull):
        operand = _compile(node.operand)
        f = operand.fn
        if node.negated:
            return _fold(Compiled(lambda d: f(d) is not None, boolean=True), operand)
        return _fold(Compiled(lambda d: f(d) is None, boolean=True), operand)
    if isinstance(node, BoolOp):
        operands = [_compile(operand) for operand in node.operands]
        return _fold(_bool_op(node.op, operands), *operands)
    assert isinstance(node, Binary)
    left, right = _compile(node.left), _compile(node.right)
    return _fold(_binary(node.op, left, right), left, right)


# -- fields -------------------------------------------------------------------------------


def _step(value: Any, key: PathKey) -> Any:
    # only dicts (mappings) and lists are indexed: never an attribute of anything
    if isinstance(key, str):
        return value.get(key) if isinstance(value, Mapping) else None
    if isinstance(value, list | tuple) and key < len(value):
        return value[key]
    return None


def _field(path: tuple[PathKey, ...]) -> Fn:
    root, keys = str(path[0]), path[1:]
    if not keys:
        return lambda d: d.get(root)
    if len(keys) == 1 and isinstance(keys[0], str):
        key = keys[0]

        def one(d: Data) -> Any:
            value = d.get(root)
            if type(value) is dict:
                return value.get(key)
            return _step(value, key)

        return one

    steps = [(key, isinstance(key, str)) for key in keys]

    def many(d: Data) -> Any:
        value = d.get(root)
        for key, by_name in steps:
            if value is None:
                return None
            value = value.get(key) if by_name and type(value) is dict else _step(value, key)
        return value

    return many


# -- calls --------------------------------------------------------------------------------


def _now(d: Data) -> datetime | None:
    now = d.get("now")
    return v.aware(now) if isinstance(now, datetime) else None


def _event_count(name: str) -> Fn:
    def count(d: Data) -> Any:
        profile = d.get("profile")
        if type(profile) is not dict and not isinstance(profile, Mapping):
            return 0
        counts = profile.get("event_counts")
        if type(counts) is not dict and not isinstance(counts, Mapping):
            return 0
        found = counts.get(name, 0)
        return found if v.is_number(found) else None

    return count


def _call(node: Call) -> Compiled:
    if node.name == "now":
        return Compiled(_now)
    if node.name == "event_count":
        (arg,) = node.args
        assert isinstance(arg, Literal) and isinstance(arg.value, str)
        return Compiled(_event_count(arg.value))
    args = [_compile(arg) for arg in node.args]
    fns = [arg.fn for arg in args]
    if node.name == "coalesce":

        def coalesce(d: Data) -> Any:
            for f in fns:
                value = f(d)
                if value is not None:
                    return value
            return None

        return _fold(Compiled(coalesce), *args)
    impl = FUNCTIONS[node.name].impl
    assert impl is not None, node.name
    if len(fns) == 1:
        f0 = fns[0]
        return _fold(Compiled(lambda d: impl(f0(d))), *args)
    return _fold(Compiled(lambda d: impl(*[f(d) for f in fns])), *args)


# -- operators ----------------------------------------------------------------------------


def _bool_op(op: str, operands: list[Compiled]) -> Compiled:
    fns = [operand.fn if operand.boolean else _as_bool(operand.fn) for operand in operands]
    if len(fns) == 2:
        a, b = fns
        if op == "and":
            return Compiled(lambda d: a(d) and b(d), boolean=True)
        return Compiled(lambda d: a(d) or b(d), boolean=True)
    if op == "and":
        return Compiled(lambda d: all(f(d) for f in fns), boolean=True)
    return Compiled(lambda d: any(f(d) for f in fns), boolean=True)


def _as_bool(f: Fn) -> Fn:
    return lambda d: v.truthy(f(d))


def _binary(op: str, left: Compiled, right: Compiled) -> Compiled:
    if op == "matches":
        assert right.constant and isinstance(right.value, str)
        regex, f = compile_regex(right.value), left.fn
        return Compiled(
            lambda d: isinstance(s := f(d), str) and regex_search(regex, s), boolean=True
        )
    if op in ("in", "not in") and right.constant and isinstance(right.value, list):
        return _member_of_constant(left.fn, right.value, negated=op == "not in")
    if op == "in" and left.constant and isinstance(left.value, str):
        return _constant_string_in(left.value, right.fn)
    if op == "-" and right.constant and isinstance(right.value, timedelta):
        return Compiled(_minus_duration(left.fn, right.value))
    if op in _FLIPPED and left.constant and not right.constant:
        op, left, right = _FLIPPED[op], right, left
    if op in _FLIPPED and right.constant:
        special = _compare_to_constant(op, left, right.value)
        if special is not None:
            return special
    a, b = left.fn, right.fn
    if op in _PYTHON:
        return _compare(op, a, b)
    compute = _BINARY[op]
    return Compiled(lambda d: compute(a(d), b(d)), boolean=op in _BOOLEAN_OPS)


def _compare(op: str, a: Fn, b: Fn) -> Compiled:
    """A comparison of two computed values (``profile.last_seen >= now() - days(7)``):
    Python's comparison for two values of one plain type, where it is the rule's."""
    fast, slow = _PYTHON[op], _BINARY[op]

    def compare(d: Data) -> bool:
        x, y = a(d), b(d)
        kind = type(x)
        if kind is type(y) and (
            kind is int
            or kind is float
            or kind is str
            # aware datetimes in UTC (what the clock and event times are): no tzinfo to fail
            or (kind is datetime and x.tzinfo is UTC and y.tzinfo is UTC)
        ):
            return fast(x, y)
        return bool(slow(x, y))

    return Compiled(compare, boolean=True)


def _compare_to_constant(op: str, left: Compiled, constant: Any) -> Compiled | None:
    if left.field is not None and v.is_number(constant):
        return _field_against_number(op, left.field, constant)
    f = left.fn
    if op in ("==", "!=") and isinstance(constant, str):
        # a string equals only a string, so Python's == is exactly the rule's ==
        if op == "==":
            return Compiled(lambda d: f(d) == constant, boolean=True)
        return Compiled(lambda d: f(d) != constant, boolean=True)
    if v.is_number(constant):
        # a number against a number is Python's comparison; any other kind takes the slow path
        fast, slow = _PYTHON[op], _BINARY[op]

        def number(d: Data) -> bool:
            value = f(d)
            kind = type(value)
            if kind is int or kind is float:
                return fast(value, constant)
            return bool(slow(value, constant))

        return Compiled(number, boolean=True)
    return None


def _field_against_number(op: str, field: tuple[str, str], constant: Any) -> Compiled:
    """``computed.orders_30d >= 3``, the commonest condition, as one closure: the field read
    inlined (the same steps as ``_field``), then Python's comparison for numbers."""
    root, key = field
    fast, slow = _PYTHON[op], _BINARY[op]

    def field_number(d: Data) -> bool:
        container = d.get(root)
        value = container.get(key) if type(container) is dict else _step(container, key)
        kind = type(value)
        if kind is int or kind is float:
            return fast(value, constant)
        return bool(slow(value, constant))

    return Compiled(field_number, boolean=True)


def _constant_string_in(item: str, f: Fn) -> Compiled:
    # "vip" in segments: Python's `in` is exact for a string in the built-in containers
    def string_in(d: Data) -> bool:
        container = f(d)
        if type(container) in _STRING_CONTAINERS:
            return item in container
        return v.member(item, container)

    return Compiled(string_in, boolean=True)


def _minus_duration(f: Fn, duration: timedelta) -> Fn:
    # now() - days(30): the date math of most time-based rules
    def minus(d: Data) -> Any:
        value = f(d)
        if type(value) is datetime and value.tzinfo is not None:
            try:
                return value - duration
            except OverflowError:
                return None
        return v.subtract(value, duration)

    return minus


def _member_of_constant(f: Fn, items: list[Any], *, negated: bool) -> Compiled:
    if all(isinstance(item, str) for item in items):
        strings = frozenset(items)
        if negated:
            return Compiled(
                lambda d: not (isinstance(x := f(d), str) and x in strings), boolean=True
            )
        return Compiled(lambda d: isinstance(x := f(d), str) and x in strings, boolean=True)
    keys = {v.membership_key(item) for item in items}
    if None not in keys:  # every item a scalar: hash lookups
        if negated:
            return Compiled(lambda d: v.membership_key(f(d)) not in keys, boolean=True)
        return Compiled(lambda d: v.membership_key(f(d)) in keys, boolean=True)
    frozen = tuple(items)
    if negated:
        return Compiled(lambda d: not v.member(f(d), frozen), boolean=True)
    return Compiled(lambda d: v.member(f(d), frozen), boolean=True)
