"""What a rule depends on, read off its AST once: the fields it reads (so a change to other
fields need not re-evaluate it), the event names it mentions (so events can be routed to the
rules that name them) and whether it depends on the clock (so it needs scheduled re-runs)."""

from __future__ import annotations

from relevo.rules.ast import Binary, Call, Field, ListExpr, Literal, Node, walk

EVENT_NAME = ("event", "name")


def fields_read(node: Node) -> frozenset[str]:
    """Paths read, cut to the root and its first key: ``traits.plan``, ``segments``."""
    found: set[str] = set()
    for current in walk(node):
        if isinstance(current, Field):
            path = current.path
            found.add(f"{path[0]}.{path[1]}" if len(path) > 1 else str(path[0]))
        elif isinstance(current, Call) and current.name == "event_count":
            found.add("profile.event_counts")
    return frozenset(found)


def event_names(node: Node) -> frozenset[str]:
    """Names compared with ``event.name`` (``==``, ``in``) or counted with ``event_count``."""
    found: set[str] = set()
    for current in walk(node):
        if isinstance(current, Call) and current.name == "event_count":
            found.update(_strings(current.args[0]))
        elif isinstance(current, Binary) and current.op in ("==", "in"):
            left, right = current.left, current.right
            if _is_event_name(left):
                found.update(_strings(right))
            elif current.op == "==" and _is_event_name(right):
                found.update(_strings(left))
        elif (
            isinstance(current, Binary)
            and current.op == "contains"
            and _is_event_name(current.right)
        ):
            found.update(_strings(current.left))
    return frozenset(found)


def uses_now(node: Node) -> bool:
    return any(isinstance(current, Call) and current.name == "now" for current in walk(node))


def _is_event_name(node: Node) -> bool:
    return isinstance(node, Field) and node.path == EVENT_NAME


def _strings(node: Node) -> list[str]:
    if isinstance(node, Literal) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ListExpr):
        return [
            item.value
            for item in node.items
            if isinstance(item, Literal) and isinstance(item.value, str)
        ]
    return []
