"""AST -> text and AST -> JSON: the canonical forms of a rule.

``parse_text(to_text(node)) == node`` and ``parse_json(to_json(node)) == node`` for every
validated rule. The text uses as few parentheses as the precedence allows:

    or  <  and  <  not  <  comparisons (non-associative)  <  + -  <  * / %  <  unary -  <  atoms
"""

from __future__ import annotations

import json
import re
from typing import Any

from relevo.rules.ast import (
    COMPARISONS,
    MEMBERSHIP,
    STRING_MATCH,
    BoolOp,
    Call,
    Field,
    IsNull,
    ListExpr,
    Literal,
    Neg,
    Node,
    Not,
)

OR, AND, NOT, COMPARE, ADD, MULTIPLY, NEGATE, ATOM = range(1, 9)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _precedence(op: str) -> int:
    if op in COMPARISONS or op in MEMBERSHIP or op in STRING_MATCH:
        return COMPARE
    return ADD if op in ("+", "-") else MULTIPLY


def to_text(node: Node) -> str:
    """The canonical text form of ``node``."""
    return _text(node)[0]


def _wrap(node: Node, lowest: int) -> str:
    text, precedence = _text(node)
    return f"({text})" if precedence < lowest else text


def _text(node: Node) -> tuple[str, int]:
    if isinstance(node, Literal):
        return _literal(node.value)
    if isinstance(node, ListExpr):
        return "[" + ", ".join(_wrap(item, OR) for item in node.items) + "]", ATOM
    if isinstance(node, Field):
        return _field(node), ATOM
    if isinstance(node, Call):
        return f"{node.name}(" + ", ".join(_wrap(arg, OR) for arg in node.args) + ")", ATOM
    if isinstance(node, Not):
        return "not " + _wrap(node.operand, NOT), NOT
    if isinstance(node, Neg):
        return "-" + _wrap(node.operand, NEGATE), NEGATE
    if isinstance(node, IsNull):
        return _wrap(node.operand, ADD) + (" is not null" if node.negated else " is null"), COMPARE
    if isinstance(node, BoolOp):
        if node.op == "and":
            return " and ".join(_wrap(operand, NOT) for operand in node.operands), AND
        return " or ".join(_wrap(operand, AND) for operand in node.operands), OR
    precedence = _precedence(node.op)
    if precedence == COMPARE:
        left, right = _wrap(node.left, ADD), _wrap(node.right, ADD)
    else:  # left-associative: a - (b - c) keeps its parentheses
        left, right = _wrap(node.left, precedence), _wrap(node.right, precedence + 1)
    return f"{left} {node.op} {right}", precedence


def _literal(value: Any) -> tuple[str, int]:
    if value is None:
        return "null", ATOM
    if isinstance(value, bool):
        return ("true" if value else "false"), ATOM
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False), ATOM
    text = repr(value)
    return text, NEGATE if text.startswith("-") else ATOM


def _field(node: Field) -> str:
    parts = [str(node.path[0])]
    for key in node.path[1:]:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _NAME.match(key):
            parts.append(f".{key}")
        else:
            parts.append("[" + json.dumps(key, ensure_ascii=False) + "]")
    return "".join(parts)


def to_json(node: Node) -> Any:
    """The JSON form of ``node`` (plain dicts, lists and scalars, ready for ``json.dumps``)."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, ListExpr):
        return [to_json(item) for item in node.items]
    if isinstance(node, Field):
        if all(isinstance(key, int) or _NAME.match(key) for key in node.path):
            return {"var": ".".join(str(key) for key in node.path)}
        return {"var": list(node.path)}
    if isinstance(node, Call):
        return {node.name: [to_json(arg) for arg in node.args]}
    if isinstance(node, Not):
        return {"not": [to_json(node.operand)]}
    if isinstance(node, Neg):
        return {"-": [to_json(node.operand)]}
    if isinstance(node, IsNull):
        return {("is not null" if node.negated else "is null"): [to_json(node.operand)]}
    if isinstance(node, BoolOp):
        return {node.op: [to_json(operand) for operand in node.operands]}
    return {node.op: [to_json(node.left), to_json(node.right)]}
