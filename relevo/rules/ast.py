"""The rule AST: the one tree both the text and the JSON form parse to.

Nodes are frozen and compare by value, ignoring ``loc`` (where the node came from: "line 1,
column 17" for text, a JSON path such as ``$.and[1]["=="][0]`` for JSON), so the two forms of
one rule give equal trees. Build nodes with :func:`negate` and :func:`bool_op` rather than the
classes where it matters: they keep the tree canonical (``-3`` is a literal, ``a and (b and c)``
is one ``and`` of three), which is what makes text -> AST -> text round-trips exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from relevo.rules.values import is_number

Scalar: TypeAlias = None | bool | int | float | str
PathKey: TypeAlias = str | int

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
MEMBERSHIP = frozenset({"in", "not in", "contains"})
STRING_MATCH = frozenset({"starts_with", "ends_with", "matches"})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
BINARY_OPS = COMPARISONS | MEMBERSHIP | STRING_MATCH | ARITHMETIC
BOOL_OPS = frozenset({"and", "or"})


@dataclass(frozen=True, slots=True, eq=False)
class Literal:
    """A constant: null, true/false, a number or a string."""

    value: Scalar
    loc: str | None = field(default=None, repr=False)

    def __eq__(self, other: object) -> bool:
        # 1 == True == 1.0 in Python; in a rule they are three different literals
        return (
            isinstance(other, Literal)
            and type(self.value) is type(other.value)
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True, slots=True)
class ListExpr:
    """A list literal: ``["gold", "silver"]``; items may be any expression."""

    items: tuple[Node, ...]
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Field:
    """A read of the data: ``traits.plan`` is ``("traits", "plan")``; ``x[0]`` gives ``0``."""

    path: tuple[PathKey, ...]
    loc: str | None = field(default=None, compare=False, repr=False)

    @property
    def root(self) -> str:
        return str(self.path[0])


@dataclass(frozen=True, slots=True)
class Call:
    """A call of an allowlisted function: ``days(30)``."""

    name: str
    args: tuple[Node, ...]
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Neg:
    """Unary minus of anything but a number literal (that is folded into the literal)."""

    operand: Node
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Binary:
    """A comparison, membership, string match or arithmetic operator (see ``BINARY_OPS``)."""

    op: str
    left: Node
    right: Node
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``and`` / ``or`` over two or more operands, none of them the same operator."""

    op: str
    operands: tuple[Node, ...]
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IsNull:
    """``x is null``, or ``x is not null`` when ``negated``."""

    operand: Node
    negated: bool = False
    loc: str | None = field(default=None, compare=False, repr=False)


Node: TypeAlias = Literal | ListExpr | Field | Call | Not | Neg | Binary | BoolOp | IsNull


def negate(operand: Node, loc: str | None = None) -> Node:
    """Unary minus, folding a number literal: ``-3`` is ``Literal(-3)``, not ``Neg(3)``."""
    if isinstance(operand, Literal) and is_number(operand.value):
        assert isinstance(operand.value, int | float)
        return Literal(-operand.value, loc or operand.loc)
    return Neg(operand, loc)


def bool_op(op: str, operands: list[Node] | tuple[Node, ...], loc: str | None = None) -> Node:
    """``and`` / ``or``, flattening nested operands of the same operator; one operand is itself."""
    flat: list[Node] = []
    for operand in operands:
        if isinstance(operand, BoolOp) and operand.op == op:
            flat.extend(operand.operands)
        else:
            flat.append(operand)
    if len(flat) == 1:
        return flat[0]
    return BoolOp(op, tuple(flat), loc or flat[0].loc)


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, ListExpr):
        return node.items
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Not | Neg | IsNull):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, BoolOp):
        return node.operands
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first (iterative: safe on any depth)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def depth_and_size(node: Node) -> tuple[int, int]:
    """The depth (a lone literal is 1) and the node count, without recursion."""
    deepest, size = 0, 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        size += 1
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(current))
    return deepest, size
