"""The JSON form -> AST (JsonLogic-like).

An operation is an object with exactly one key, the operator or function name, whose value is
the list of its arguments (a single non-list argument may stand alone: ``{"not": x}``)::

    {"and": [{"==": [{"var": "traits.plan"}, "gold"]},
             {">=": [{"var": "computed.orders_30d"}, 3]}]}

A string, number, boolean or null is a literal; a JSON array is a list literal; ``{"var":
"traits.plan"}`` (or ``{"var": ["event", "properties", "Product Name"]}`` for keys that are not
names) reads a field. Every key is checked against the allowlist here; a key that is neither
an operator nor a function is an error with its JSON path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from relevo.rules.ast import (
    BINARY_OPS,
    BOOL_OPS,
    Binary,
    Call,
    Field,
    IsNull,
    ListExpr,
    Literal,
    Node,
    Not,
    PathKey,
    bool_op,
    negate,
)
from relevo.rules.errors import RuleError
from relevo.rules.functions import FUNCTIONS
from relevo.rules.limits import MAX_DEPTH

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
UNARY_OPS = frozenset({"not", "is null", "is not null"})
JSON_OPS = BINARY_OPS | BOOL_OPS | UNARY_OPS | {"var"}


def is_json_rule(value: Any) -> bool:
    """Whether a decoded JSON value has the shape of a JSON-form rule (one operator key)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in JSON_OPS or key in FUNCTIONS


def json_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _NAME.match(key):
        return f"{parent}.{key}"
    return f"{parent}[{_quote(key)}]"


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_json(source: Any) -> Node:
    """Parse the JSON form (an already decoded JSON value) into an AST.

    Raises:
        RuleError: with the JSON path of the first part that is not a rule.
    """
    return _parse(source, "$", 1)


def _parse(value: Any, where: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise RuleError.at(where, f"rule is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool | int | float | str):
        return Literal(value, where)
    if isinstance(value, list | tuple):
        items = [_parse(item, json_path(where, i), depth + 1) for i, item in enumerate(value)]
        return ListExpr(tuple(items), where)
    if not isinstance(value, Mapping):
        raise RuleError.at(where, f"not a JSON value: {type(value).__name__}")
    if len(value) != 1:
        raise RuleError.at(
            where, f"an operation is an object with exactly one key, not {len(value)}"
        )
    ((op, raw_args),) = value.items()
    if not isinstance(op, str):
        raise RuleError.at(where, "an operation's key must be a string")
    here = json_path(where, op)
    if op == "var":
        return Field(_var_path(raw_args, here), where)
    if op not in JSON_OPS and op not in FUNCTIONS:
        raise RuleError.at(here, f"unknown operator {op!r}" + _suggest(op))
    listed = isinstance(raw_args, list | tuple)
    raw = list(raw_args) if listed else [raw_args]
    args = [
        _parse(arg, json_path(here, i) if listed else here, depth + 1) for i, arg in enumerate(raw)
    ]
    if op in FUNCTIONS:
        return Call(op, tuple(args), where)
    return _operation(op, args, here, where)


def _operation(op: str, args: list[Node], here: str, where: str) -> Node:
    if op in BOOL_OPS:
        if not args:
            raise RuleError.at(here, f"{op!r} needs at least one operand")
        return bool_op(op, args, where)
    if op == "-" and len(args) == 1:
        return negate(args[0], where)
    if op in UNARY_OPS:
        if len(args) != 1:
            raise RuleError.at(here, f"{op!r} takes one operand, not {len(args)}")
        if op == "not":
            return Not(args[0], where)
        return IsNull(args[0], op == "is not null", where)
    if len(args) != 2:
        raise RuleError.at(here, f"{op!r} takes two operands, not {len(args)}")
    return Binary(op, args[0], args[1], where)


def _var_path(raw: Any, where: str) -> tuple[PathKey, ...]:
    if isinstance(raw, str):
        if not raw:
            raise RuleError.at(where, "empty field path")
        parts = raw.split(".")
        if "" in parts:
            raise RuleError.at(where, f"empty key in field path {raw!r}")
        return tuple(int(p) if p.isascii() and p.isdigit() else p for p in parts)
    if isinstance(raw, list | tuple) and raw and isinstance(raw[0], str):
        keys: list[PathKey] = []
        for i, key in enumerate(raw):
            if not isinstance(key, str) and not (
                isinstance(key, int) and not isinstance(key, bool)
            ):
                raise RuleError.at(json_path(where, i), "a field path key is a string or an index")
            if isinstance(key, int) and key < 0:
                raise RuleError.at(json_path(where, i), "a list index cannot be negative")
            keys.append(key)
        return tuple(keys)
    raise RuleError.at(where, 'a field is {"var": "root.key"} or {"var": ["root", "key", ...]}')


def _suggest(op: str) -> str:
    known = {"!": "not", "!==": "!=", "===": "==", "if": None, "eval": None}
    hint = known.get(op)
    return f" (did you mean {hint!r}?)" if hint else ""
