"""Which template syntax a content template may use, checked on the parsed template.

An allowlist of Jinja nodes: output, ``if``, ``for`` (not recursive), ``set x = ...``,
``with``, lookups, filters, tests, comparisons, arithmetic and ``~``. Refused when the template
is saved: calls (``x.format(...)``, ``range(9)``: use filters), macros, blocks, includes,
imports, ``{% set %}...{% endset %}``, ``{% filter %}``, ``{% autoescape %}``, list and dict
literals, ``self``, names and keys starting with ``_``, filters and tests not in the sandbox's
lists. What is left is bounded at render time by :mod:`relevo.content.sandbox`, whose loop
and concatenation guards :func:`add_runtime_bounds` wires in.
"""

from __future__ import annotations

from jinja2 import meta, nodes
from jinja2.visitor import NodeTransformer

from relevo.content.sandbox import LOOP_FILTER, TEXT_FILTER, USER_FILTERS, USER_TESTS

_ALLOWED = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.For, nodes.If, nodes.Assign,
    nodes.With, nodes.Name, nodes.Const, nodes.Getattr, nodes.Getitem, nodes.Slice,
    nodes.Filter, nodes.Test, nodes.CondExpr, nodes.BinExpr, nodes.UnaryExpr, nodes.Compare,
    nodes.Operand, nodes.Concat, nodes.Keyword, nodes.Tuple,
)  # fmt: skip

_REFUSED = {
    nodes.Call: "calls are not allowed: use a filter, as in {{ name|upper }}",
    nodes.Macro: "macros are not allowed",
    nodes.CallBlock: "macros are not allowed",
    nodes.Block: "blocks are not allowed",
    nodes.Extends: "other templates cannot be extended, included or imported",
    nodes.Include: "other templates cannot be extended, included or imported",
    nodes.Import: "other templates cannot be extended, included or imported",
    nodes.FromImport: "other templates cannot be extended, included or imported",
    nodes.AssignBlock: "{% set %}...{% endset %} is not allowed: use {% set x = ... %}",
    nodes.FilterBlock: "{% filter %} is not allowed: apply the filter to the value",
    nodes.Scope: "{% autoescape %} is not allowed",  # the only statement that parses to one
    nodes.ScopedEvalContextModifier: "{% autoescape %} is not allowed",
    nodes.EvalContextModifier: "{% autoescape %} is not allowed",
    nodes.List: "list literals are not allowed",
    nodes.Dict: "dict literals are not allowed",
}

Problem = tuple[int, str]  # (line, message)


def check_syntax(template: nodes.Template) -> list[Problem]:
    """Every use of syntax content templates may not use, with its line."""
    found: list[Problem] = []
    _check(template, found)
    return found


def _check(node: nodes.Node, found: list[Problem]) -> None:
    message = _refusal(node)
    if message is not None:
        found.append((_line(node), message))
        return
    for child in node.iter_child_nodes():
        _check(child, found)


def _line(node: nodes.Node) -> int:
    """The node's line, or its first descendant's (Jinja leaves some nodes without one)."""
    lines = (n.lineno for n in (node, *node.find_all(nodes.Node)) if n.lineno)
    return next(lines, 1)


def _refusal(node: nodes.Node) -> str | None:
    """Why this node is refused, or None when it is allowed."""
    if not isinstance(node, _ALLOWED):
        return _REFUSED.get(type(node), f"{type(node).__name__} is not allowed")
    if isinstance(node, nodes.Tuple) and node.ctx != "store":
        return "tuple literals are not allowed"
    if isinstance(node, nodes.For) and node.recursive:
        return "recursive loops are not allowed"
    if isinstance(node, nodes.Name) and (node.name.startswith("_") or node.name == "self"):
        return f"the name {node.name!r} is not allowed"
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return f"the field {node.attr!r} is not allowed: names starting with _ are private"
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
        and node.arg.value.startswith("_")
    ):
        return f"the key {node.arg.value!r} is not allowed: names starting with _ are private"
    if isinstance(node, nodes.Filter | nodes.Test):
        return _filter_or_test_refusal(node)
    return None


def _filter_or_test_refusal(node: nodes.Filter | nodes.Test) -> str | None:
    kind, known = (
        ("filter", USER_FILTERS) if isinstance(node, nodes.Filter) else ("test", USER_TESTS)
    )
    if node.name not in known:
        return f"unknown {kind} {node.name!r}"
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return f"*args and **kwargs are not allowed in the {kind} {node.name!r}"
    return None


# -- the fields a template reads -------------------------------------------------------------


def referenced_fields(template: nodes.Template) -> frozenset[str]:
    """The variable paths the template reads, such as ``profile.traits.first_name``.

    A path follows attribute and constant-key lookups from a name the template does not set
    itself (loop variables, ``set`` and ``with`` names and ``loop`` are not fields); it stops
    at an index or a computed key, so ``profile.traits.cart[0].name`` reads
    ``profile.traits.cart``. Best effort: a name both set and read before it is set counts.
    """
    roots = meta.find_undeclared_variables(template)
    found: set[str] = set()
    _collect(template, roots, found)
    return frozenset(found)


def _collect(node: nodes.Node, roots: set[str], found: set[str]) -> None:
    if isinstance(node, nodes.Name):
        if node.ctx == "load" and node.name in roots:
            found.add(node.name)
        return
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        path, further = _lookup_chain(node)
        if path and path[0] in roots:
            found.add(".".join(path))
        for expression in further:
            _collect(expression, roots, found)
        return
    for child in node.iter_child_nodes():
        _collect(child, roots, found)


def _lookup_chain(node: nodes.Node) -> tuple[list[str], list[nodes.Node]]:
    """The constant path a chain of lookups reads from a name (empty when it does not start
    at a name), and the expressions inside it that still need visiting (the computed keys, or
    the expression the chain starts from)."""
    steps: list[nodes.Getattr | nodes.Getitem] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        steps.append(node)
        node = node.node
    keys: list[nodes.Node] = [step.arg for step in steps if isinstance(step, nodes.Getitem)]
    if not (isinstance(node, nodes.Name) and node.ctx == "load"):
        return [], [node, *keys]
    path = [node.name]
    for step in reversed(steps):
        key = _constant_key(step)
        if key is None:
            break
        path.append(key)
    return path, keys


def _constant_key(step: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(step, nodes.Getattr):
        return step.attr
    arg = step.arg
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


# -- runtime bounds --------------------------------------------------------------------------


class _RuntimeBounds(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filtered(node.iter, LOOP_FILTER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        return _filtered(self.generic_visit(node), TEXT_FILTER)


def _filtered(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def add_runtime_bounds(template: nodes.Template) -> None:
    """Wrap every loop's iterable and every ``~`` in the sandbox's guards (in place).

    Run after :func:`check_syntax`: the guards are filters a template may not name itself.
    """
    _RuntimeBounds().visit(template)
