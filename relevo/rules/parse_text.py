"""The text form -> AST, with a LALR grammar (lark).

The grammar is small and closed: literals, dotted field paths, calls of a name, list literals,
and a fixed set of operators. The parser builds AST nodes as it reduces (lark's inline
transformer), so no parse tree is kept and no recursion grows with the input. Syntax errors say
where (line and column) and what was expected there.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, cast

from lark import Lark, Token, Transformer, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from relevo.rules.ast import (
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
from relevo.rules.limits import MAX_TEXT_LENGTH

GRAMMAR = r"""
?start: or_test

?or_test: and_test (_OR and_test)*
?and_test: not_test (_AND not_test)*
?not_test: NOT not_test                     -> not_
         | comparison
?comparison: sum
           | sum COMP_OP sum                -> binary
           | sum (IN | CONTAINS | STARTS_WITH | ENDS_WITH | MATCHES) sum -> binary
           | sum NOT IN sum                 -> not_in
           | sum IS NULL                    -> is_null
           | sum IS NOT NULL                -> is_not_null
?sum: product
    | sum (PLUS | MINUS) product            -> binary
?product: unary
        | product (STAR | SLASH | PERCENT) unary -> binary
?unary: MINUS unary                         -> neg
      | atom
?atom: NUMBER                               -> number
     | STRING                               -> string
     | TRUE                                 -> literal
     | FALSE                                -> literal
     | NULL                                 -> literal
     | NAME "(" [_args] ")"                 -> call
     | LSQB [_args] "]"                     -> list_expr
     | NAME _segment*                       -> path
     | "(" or_test ")"
_args: or_test ("," or_test)*
_segment: "." NAME
        | "[" STRING "]"
        | "[" NUMBER "]"

COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"
LSQB: "["
_OR: "or"
_AND: "and"
NOT: "not"
IN: "in"
IS: "is"
CONTAINS: "contains"
STARTS_WITH: "starts_with"
ENDS_WITH: "ends_with"
MATCHES: "matches"
TRUE: "true"
FALSE: "false"
NULL: "null"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/
STRING: /"(?:[^"\\\n]|\\.)*"/

%ignore /[ \t\r\n]+/
"""

# what a terminal is called in an error message
_EXPECTED_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a string ("...")',
    "COMP_OP": "a comparison (== != < <= > >=)",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "DOT": "'.'",
    "$END": "the end of the rule",
}


def _loc(token: Token) -> str:
    return f"line {token.line}, column {token.column}"


class _Build(Transformer[Token, Node]):
    """Builds AST nodes as the LALR parser reduces (no parse tree is kept)."""

    def or_test(self, children: list[Node]) -> Node:
        return bool_op("or", children)

    def and_test(self, children: list[Node]) -> Node:
        return bool_op("and", children)

    def not_(self, children: list[Any]) -> Node:
        token, operand = children
        return Not(operand, _loc(token))

    def binary(self, children: list[Any]) -> Node:
        left, op, right = children
        return Binary(str(op), left, right, left.loc)

    def not_in(self, children: list[Any]) -> Node:
        left, _not, _in, right = children
        return Binary("not in", left, right, left.loc)

    def is_null(self, children: list[Any]) -> Node:
        return IsNull(children[0], False, children[0].loc)

    def is_not_null(self, children: list[Any]) -> Node:
        return IsNull(children[0], True, children[0].loc)

    def neg(self, children: list[Any]) -> Node:
        token, operand = children
        return negate(operand, _loc(token))

    def number(self, children: list[Token]) -> Node:
        (token,) = children
        return Literal(_number(token), _loc(token))

    def string(self, children: list[Token]) -> Node:
        (token,) = children
        return Literal(_string(token), _loc(token))

    def literal(self, children: list[Token]) -> Node:
        (token,) = children
        return Literal({"true": True, "false": False, "null": None}[str(token)], _loc(token))

    def call(self, children: list[Any]) -> Node:
        name, *args = children
        return Call(str(name), tuple(args), _loc(name))

    def list_expr(self, children: list[Any]) -> Node:
        bracket, *items = children
        return ListExpr(tuple(items), _loc(bracket))

    def path(self, children: list[Token]) -> Node:
        keys: list[PathKey] = []
        for token in children:
            if token.type == "NAME":
                keys.append(str(token))
            elif token.type == "STRING":
                keys.append(_string(token))
            else:
                index = _number(token)
                if not isinstance(index, int):
                    raise RuleError.at(_loc(token), "a list index must be a whole number")
                keys.append(index)
        return Field(tuple(keys), _loc(children[0]))


def _number(token: Token) -> int | float:
    text = str(token)
    try:
        if text.isdigit():
            return int(text)
        value = float(text)
    except ValueError as exc:  # more digits than int() takes
        raise RuleError.at(_loc(token), "number is too long") from exc
    if value in (float("inf"), float("-inf")):
        raise RuleError.at(_loc(token), "number is out of range")
    return value


def _string(token: Token) -> str:
    # the STRING token is a JSON string literal (double quotes, JSON escapes): json decodes it
    try:
        value = json.loads(str(token))
    except json.JSONDecodeError as exc:
        # the token holds no newline, so the error's offset is a column offset
        where = f"line {token.line}, column {(token.column or 1) + exc.pos}"
        hint = " (a backslash is written \\\\)" if "escape" in exc.msg else ""
        raise RuleError.at(where, f"invalid string: {exc.msg}{hint}") from exc
    assert isinstance(value, str)
    return value


@cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", transformer=_Build())


def parse_text(text: str) -> Node:
    """Parse the text form into an AST (no validation of names: see ``validate``).

    Raises:
        RuleError: the text is too long or is not a rule of the grammar.
    """
    if len(text) > MAX_TEXT_LENGTH:
        raise RuleError.at("line 1, column 1", f"rule is longer than {MAX_TEXT_LENGTH} characters")
    if not text.strip():
        raise RuleError.at("line 1, column 1", "rule is empty")
    try:
        node = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    # the inline transformer makes parse() return what _Build built, not a lark Tree
    assert not isinstance(node, Tree)
    return cast(Node, node)


def _syntax_error(text: str, exc: UnexpectedInput) -> RuleError:
    parser = _parser()
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        where = f"line {exc.line}, column {exc.column}"
        if char == "'":
            return RuleError.at(where, 'unexpected "\'": strings use double quotes')
        if char == '"':
            return RuleError.at(where, "unterminated string")
        return RuleError.at(
            where, f"unexpected character {char!r}" + _expected(parser, exc.allowed)
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        where = f"line {exc.line}, column {exc.column}"
        return RuleError.at(
            where, f"unexpected {str(exc.token)!r}" + _expected(parser, exc.accepts or exc.expected)
        )
    expected = exc.expected if isinstance(exc, UnexpectedEOF | UnexpectedToken) else set()
    lines = text.split("\n")
    where = f"line {len(lines)}, column {len(lines[-1]) + 1}"
    return RuleError.at(where, "unexpected end of rule" + _expected(parser, expected))


def _expected(parser: Lark, names: Any) -> str:
    if not names:
        return ""
    shown: set[str] = set()
    for name in names:
        if name in _EXPECTED_NAMES:
            shown.add(_EXPECTED_NAMES[name])
        else:
            try:
                pattern = parser.get_terminal(name).pattern
            except KeyError:
                shown.add(name)
                continue
            shown.add(repr(pattern.value) if pattern.type == "str" else name)
    return "; expected " + ", ".join(sorted(shown))
