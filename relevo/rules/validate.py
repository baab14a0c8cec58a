"""Checks a parsed rule before it is compiled: one validator for both forms.

It reports every problem it finds, each with the node's location: field roots the caller did
not allow, path keys that reach for internals (``_x``, ``__class__``), functions not on the
allowlist or called with the wrong arguments, comparisons with the null literal, regular
expressions that are too long or do not compile under RE2, and literals out of range.
"""

from __future__ import annotations

from collections.abc import Iterable

from relevo.errors import ErrorDetail
from relevo.rules.ast import (
    COMPARISONS,
    Binary,
    Call,
    Field,
    Literal,
    Node,
    depth_and_size,
    walk,
)
from relevo.rules.errors import CODE, RuleError
from relevo.rules.functions import FUNCTIONS
from relevo.rules.limits import (
    MAX_DEPTH,
    MAX_INT,
    MAX_NODES,
    MAX_STRING_LENGTH,
)
from relevo.rules.regex import compile_regex
from relevo.rules.values import to_datetime

ALL_ROOTS: frozenset[str] = frozenset(
    {"traits", "computed", "profile", "event", "context", "segments"}
)
MAX_INDEX = 2**31 - 1


def validate(node: Node, roots: frozenset[str]) -> None:
    """Raise :class:`RuleError` listing every problem of ``node``; return if there is none."""
    depth, size = depth_and_size(node)
    where = node.loc or "$"
    if depth > MAX_DEPTH:
        raise RuleError.at(where, f"rule is nested more than {MAX_DEPTH} levels deep")
    if size > MAX_NODES:
        raise RuleError.at(where, f"rule has more than {MAX_NODES} parts")
    problems: list[ErrorDetail] = []
    for current in walk(node):
        for message in _check(current, roots):
            problems.append(ErrorDetail(current.loc or "$", message, CODE))
    if problems:
        raise RuleError(problems)


def _check(node: Node, roots: frozenset[str]) -> list[str]:
    if isinstance(node, Literal):
        return _check_literal(node)
    if isinstance(node, Field):
        return _check_field(node, roots)
    if isinstance(node, Call):
        return _check_call(node, roots)
    if isinstance(node, Binary):
        return _check_binary(node)
    return []


def _check_literal(node: Literal) -> list[str]:
    value = node.value
    if isinstance(value, bool):
        return []
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        return ["integer is out of the 64-bit range"]
    if isinstance(value, float) and not abs(value) <= 1.7976931348623157e308:  # not inf or nan
        return ["number must be finite"]
    if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
        return [f"string is longer than {MAX_STRING_LENGTH} characters"]
    return []


def _check_field(node: Field, roots: frozenset[str]) -> list[str]:
    root = node.path[0]
    if not isinstance(root, str) or root not in ALL_ROOTS:
        return [f"unknown field root {root!r}; a field starts with one of {_names(roots)}"]
    if root not in roots:
        return [f"{root!r} cannot be used in this rule; a field starts with one of {_names(roots)}"]
    if root == "segments" and len(node.path) > 1:
        return ['segments is a set of segment names: test it with "name" in segments']
    problems = []
    for key in node.path[1:]:
        if isinstance(key, str) and (key.startswith("_") or "__" in key):
            problems.append(
                f"field key {key!r} is not allowed (keys starting with '_' or containing"
                " '__' are reserved)"
            )
        elif isinstance(key, int) and not 0 <= key <= MAX_INDEX:
            problems.append(f"list index {key} is out of range")
    return problems


def _check_call(node: Call, roots: frozenset[str]) -> list[str]:
    function = FUNCTIONS.get(node.name)
    if function is None:
        return [f"unknown function {node.name!r}; the functions are {_names(FUNCTIONS)}"]
    count = len(node.args)
    if count < function.min_args or (function.max_args is not None and count > function.max_args):
        return [f"{node.name}() takes {_arity(function.min_args, function.max_args)}, not {count}"]
    if function.reads is not None and function.reads not in roots:
        return [f"{node.name}() reads {function.reads!r}, which this rule cannot use"]
    if function.literal_string:
        (arg,) = node.args
        if not (isinstance(arg, Literal) and isinstance(arg.value, str)):
            return [f"{node.name}() takes a string literal"]
        if node.name == "date" and to_datetime(arg.value) is None:
            return [f"date() cannot read {arg.value!r}: use ISO 8601, e.g. 2026-01-01T00:00:00Z"]
    return []


def _check_binary(node: Binary) -> list[str]:
    if node.op in COMPARISONS and (_is_null(node.left) or _is_null(node.right)):
        return [f"{node.op!r} with null is never true: use 'is null' or 'is not null'"]
    if node.op == "matches":
        pattern = node.right
        if not (isinstance(pattern, Literal) and isinstance(pattern.value, str)):
            return ["matches takes a string literal pattern"]
        try:
            compile_regex(pattern.value)
        except ValueError as exc:
            return [str(exc)]
    return []


def _is_null(node: Node) -> bool:
    return isinstance(node, Literal) and node.value is None


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _arity(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"
