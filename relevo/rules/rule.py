"""``compile_rule``: a definition (text or JSON) -> a validated, compiled :class:`Rule`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relevo.rules.analysis import event_names, fields_read, uses_now
from relevo.rules.ast import Node
from relevo.rules.compile import compile_node
from relevo.rules.parse_json import parse_json
from relevo.rules.parse_text import parse_text
from relevo.rules.render import to_json, to_text
from relevo.rules.validate import ALL_ROOTS, validate


class Rule:
    """A compiled rule. Build it with :func:`compile_rule`.

    Attributes:
        ast: the validated tree (text and JSON forms of one rule give equal trees).
        fields: the paths the rule reads, cut to root and first key (``"traits.plan"``,
            ``"computed.orders_30d"``, ``"event.name"``, ``"segments"``).
        event_names: event names the rule compares with ``event.name`` or counts with
            ``event_count``, for routing events to the rules that mention them.
        uses_now: whether the result depends on the time, so the rule needs re-evaluation
            on a schedule and not only when its fields change.
        text: the canonical text form.
    """

    __slots__ = (
        "_fn",
        "_test",
        "ast",
        "event_names",
        "fields",
        "predicate",
        "roots",
        "text",
        "uses_now",
    )

    def __init__(self, ast: Node, roots: frozenset[str]) -> None:
        self.ast = ast
        self.roots = roots
        self._fn, self._test = compile_node(ast)
        # ``evaluate`` without the method call, for loops over many rules (decisions)
        self.predicate: Callable[[Mapping[str, Any]], bool] = self._test
        self.fields = fields_read(ast)
        self.event_names = event_names(ast)
        self.uses_now = uses_now(ast)
        self.text = to_text(ast)

    def evaluate(self, data: Mapping[str, Any]) -> bool:
        """Whether the rule holds for ``data``; never raises, whatever the data holds.

        Args:
            data: ``{"traits": {...}, "computed": {...}, "profile": {...}, "event": {...} or
                None, "context": {...}, "segments": set[str], "now": datetime}``; a missing
                key reads as null.
        """
        return self._test(data)  # type: ignore[no-any-return]  # a bool by construction

    def value(self, data: Mapping[str, Any]) -> Any:
        """The rule's raw value for ``data`` (for expressions that are not conditions)."""
        return self._fn(data)

    def to_json(self) -> Any:
        """The JSON form of the rule."""
        return to_json(self.ast)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.ast == other.ast and self.roots == other.roots

    def __hash__(self) -> int:
        return hash(self.ast)

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"


def parse_rule(source: str | Mapping[str, Any]) -> Node:
    """The AST of a text (``str``) or JSON (a decoded mapping) definition, not yet validated.

    Raises:
        RuleError: the definition does not parse.
    """
    if isinstance(source, str):
        return parse_text(source)
    return parse_json(source)


def compile_rule(source: str | Mapping[str, Any], *, roots: frozenset[str] = ALL_ROOTS) -> Rule:
    """Parse, validate and compile a rule definition, once (then evaluate it many times).

    Args:
        source: the text form (a ``str``) or the JSON form (a decoded JSON object).
        roots: the field roots this use of rules allows, a subset of ``ALL_ROOTS``
            (a segment condition has no current event, for instance).

    Returns:
        The compiled rule.

    Raises:
        RuleError: the definition does not parse or does not validate; ``details`` says
            where (line and column, or JSON path) and why.
        ValueError: ``roots`` names a root that does not exist (a programming error).
    """
    unknown = roots - ALL_ROOTS
    if unknown:
        raise ValueError(f"unknown rule roots: {sorted(unknown)}")
    ast = parse_rule(source)
    validate(ast, roots)
    return Rule(ast, roots)
