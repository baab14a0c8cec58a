"""Computed trait definitions: what to aggregate, over which events, in which window.

A definition is data (a YAML or JSON mapping) checked once and turned into a frozen
``ComputedTraitDef``. The event filter is a plain ``Callable[[Event], bool]`` (``EventFilter``)
built from the definition: the event type and names are matched through an index (see
``relevo.profiles.computed``), and the ``where`` conditions are compiled by a ``WhereCompiler``.
The default compiler, ``equality_where``, accepts ``{"<property path>": value | [values]}``; a
rule-language compiler can be passed to ``parse_definitions`` instead without touching the
aggregation code.

Windows are kept as time buckets of ``Window.bucket_seconds``: the largest width from
``BUCKET_WIDTHS`` that still splits the window into at least ``MIN_BUCKETS`` buckets (so a
30-day window has day buckets, a 7-day window 6-hour buckets, a 1-hour window 2-minute
buckets). A window never holds more than ``MAX_BUCKETS`` buckets.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import msgspec

from relevo.errors import ErrorDetail, ValidationError
from relevo.events.model import EVENT_TYPES, Event
from relevo.rules import compile_rule, is_json_rule

Kind = Literal[
    "count",
    "sum",
    "average",
    "min",
    "max",
    "first",
    "last",
    "distinct_count",
    "most_frequent",
    "days_since_last",
]
KINDS: tuple[str, ...] = get_args(Kind)
# kinds that aggregate a property (the others count or date matching events)
PROPERTY_KINDS = frozenset(KINDS) - {"count", "days_since_last"}
# event types whose events have a name (track: ``event``; page, screen: ``name``)
NAMED_TYPES: tuple[str, ...] = ("track", "page", "screen")

Unit = Literal["minutes", "hours", "days"]
UNIT_SECONDS: dict[str, int] = {"minutes": 60, "hours": 3600, "days": 86400}
_UNIT_ALIASES: dict[str, Unit] = {
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
}
_WINDOW_TEXT = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

MAX_WINDOW_SECONDS = 730 * 86400  # two years
MIN_BUCKETS = 24
MAX_BUCKETS = 64
# bucket widths in seconds: each divides a day (up to one) or is whole days, so buckets start
# on UTC minute, hour or day boundaries
BUCKET_WIDTHS: tuple[int, ...] = (
    *(1, 2, 5, 10, 15, 30),
    *(60, 120, 300, 600, 900, 1800),
    *(3600, 7200, 10800, 21600, 43200),
    *(86400, 2 * 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400),
)

# Distinct values kept per trait (distinct_count, most_frequent): the whole budget in one
# lifetime bucket, or split over a window's buckets with at least MIN_VALUES_PER_BUCKET each.
VALUES_PER_TRAIT = 1024
MIN_VALUES_PER_BUCKET = 16

EventFilter = Callable[[Event], bool]
WhereCompiler = Callable[[Any], EventFilter]
ScalarType = str | int | float | bool | None
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Window:
    """The last ``amount`` ``unit`` before now, kept as ``buckets`` buckets of
    ``bucket_seconds`` (the resolution of the window's older edge)."""

    amount: int
    unit: Unit
    seconds: int = field(init=False, repr=False, compare=False)
    bucket_seconds: int = field(init=False, repr=False, compare=False)
    buckets: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seconds = self.amount * UNIT_SECONDS.get(self.unit, 0)
        width = bucket_width(seconds)
        object.__setattr__(self, "seconds", seconds)
        object.__setattr__(self, "bucket_seconds", width)
        object.__setattr__(self, "buckets", -(-seconds // width))

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}"


def bucket_width(window_seconds: int) -> int:
    """The largest of ``BUCKET_WIDTHS`` that cuts the window into ``MIN_BUCKETS`` or more."""
    fitting = [w for w in BUCKET_WIDTHS if window_seconds // w >= MIN_BUCKETS]
    return fitting[-1] if fitting else BUCKET_WIDTHS[0]


def parse_window(value: Any) -> Window | None:
    """``None``/``"lifetime"``, ``"30d"``/``"30 days"``/``"12h"``/``"90m"``, or a mapping
    with one key, ``{"days": 30}``.

    Raises:
        ValueError: with a message fit for a user.
    """
    if value is None or value == "lifetime":
        return None
    amount: Any
    if isinstance(value, str):
        match = _WINDOW_TEXT.match(value.lower())
        unit = _UNIT_ALIASES.get(match.group(2)) if match else None
        if match is None or unit is None:
            raise ValueError(
                f"{value!r} is not a window: use 'lifetime' or an amount and a unit, "
                "e.g. '30d', '12 hours', '90m'"
            )
        amount = int(match.group(1))
    elif isinstance(value, Mapping) and len(value) == 1:
        key, amount = next(iter(value.items()))
        unit = _UNIT_ALIASES.get(str(key))
        if unit is None or unit not in UNIT_SECONDS:
            raise ValueError(f"{key!r} is not a window unit: use minutes, hours or days")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ValueError(f"the window amount must be a whole number, not {amount!r}")
    else:
        raise ValueError(
            f"{value!r} is not a window: use 'lifetime', '30d' or a mapping like {{days: 30}}"
        )
    window = Window(amount, unit)
    if amount < 1 or window.seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"the window must be between 1 minute and 730 days, not {window}")
    return window


def split_path(path: str) -> tuple[str, ...]:
    """``"a.b"`` -> ``("a", "b")``; raises ValueError on an empty part."""
    parts = tuple(path.split("."))
    if not path or not all(parts):
        raise ValueError(f"{path!r} is not a property path (dotted names, e.g. 'item.sku')")
    return parts


def lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested mappings; ``None`` when any part is missing."""
    value: Any = data
    for part in path:
        if value.__class__ is not dict:
            return None
        value = value.get(part)
    return value


def equality_where(where: Any) -> EventFilter:
    """Compile ``{"<property path>": value | [values]}``: every path must hold the value, or
    one of the values (a missing property is ``null``). Booleans only equal booleans; ``1``
    equals ``1.0``.

    Raises:
        ValidationError: the conditions are not of that form.
    """
    if not isinstance(where, Mapping) or not where:
        raise ValidationError(
            "where: expected a mapping of property path to a value or a list of values",
            details=[ErrorDetail("where", "expected a non-empty mapping")],
        )
    conditions: list[tuple[tuple[str, ...], frozenset[Any], frozenset[Any]]] = []
    details: list[ErrorDetail] = []
    for path, expected in where.items():
        location = f"where.{path}"
        try:
            parts = split_path(path) if isinstance(path, str) else split_path("")
        except ValueError as exc:
            details.append(ErrorDetail(location, str(exc)))
            continue
        options = expected if isinstance(expected, list) else [expected]
        if not options:
            details.append(ErrorDetail(location, "an empty list matches nothing"))
            continue
        bad = [o for o in options if not isinstance(o, _SCALARS)]
        if bad:
            details.append(
                ErrorDetail(location, f"values must be strings, numbers, booleans or null: {bad}")
            )
            continue
        conditions.append(
            (
                parts,
                frozenset(o for o in options if isinstance(o, bool)),
                frozenset(o for o in options if not isinstance(o, bool)),
            )
        )
    if details:
        raise ValidationError(f"where: {details[0].message}", details=details)
    return _equality_filter(tuple(conditions))


EVENT_ROOTS = frozenset({"event"})


def rule_or_equality_where(where: Any) -> EventFilter:
    """``where`` as a rule over the event (text or JSON form of the rule language, e.g.
    ``'event.properties.category in ["running", "trail"]'``), or the equality mapping.

    A JSON-form rule is told from an equality mapping by its single operator key
    (``{"and": [...]}``, ``{"==": [...]}``).
    """
    if isinstance(where, str) or is_json_rule(where):
        rule = compile_rule(where, roots=EVENT_ROOTS)

        def matches(event: Event) -> bool:
            return bool(rule.evaluate({"event": rule_event(event)}))

        return matches
    return equality_where(where)


def rule_event(event: Event) -> dict[str, Any]:
    """What a rule sees of an event as ``event``."""
    return {
        "type": event.type,
        "name": event.event if event.type == "track" else event.name,
        "properties": event.properties,
        "context": event.context,
        "traits": event.traits,
    }


def _equality_filter(
    conditions: tuple[tuple[tuple[str, ...], frozenset[Any], frozenset[Any]], ...],
) -> EventFilter:
    def matches(event: Event) -> bool:
        properties = event.properties
        for path, bools, others in conditions:
            value = properties.get(path[0]) if len(path) == 1 else lookup(properties, path)
            cls = value.__class__
            if cls is bool:
                if value not in bools:
                    return False
            elif cls is dict or cls is list or value not in others:
                return False
        return True

    return matches


@dataclass(frozen=True, slots=True)
class ComputedTraitDef:
    """One computed trait. Build it with ``parse_definition`` (from data) or directly; either
    way it is validated and raises ``ValidationError`` when it makes no sense.

    ``event_type`` defaults to ``"track"`` when ``events`` (names) are given, else any type.
    ``where_filter`` is compiled from ``where`` with ``equality_where`` unless given.
    """

    name: str
    kind: Kind
    event_type: str | None = None
    events: tuple[str, ...] = ()
    where: Any = None
    property: str | None = None
    window: Window | None = None
    description: str = ""
    where_filter: EventFilter | None = field(default=None, compare=False, repr=False)
    path: tuple[str, ...] = field(init=False, compare=False, repr=False)
    sig: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        details = self._problems()
        if details:
            label = self.name if isinstance(self.name, str) else "?"
            raise ValidationError(
                f"computed trait {label!r}: " + "; ".join(d.message for d in details),
                details=details,
            )
        set_ = object.__setattr__
        if self.events and self.event_type is None:
            set_(self, "event_type", "track")
        set_(self, "events", tuple(self.events))
        if self.where is not None and self.where_filter is None:
            set_(self, "where_filter", equality_where(self.where))
        set_(self, "path", split_path(self.property) if self.property else ())
        set_(self, "sig", self._fingerprint())

    @builtins.property  # the field 'property' shadows the builtin here
    def windowed(self) -> bool:
        return self.window is not None

    @builtins.property
    def bucket_seconds(self) -> int:
        """Bucket width in seconds; 0 for a lifetime trait (one bucket)."""
        return self.window.bucket_seconds if self.window is not None else 0

    @builtins.property
    def values_cap(self) -> int:
        """How many distinct values one bucket keeps (distinct_count, most_frequent)."""
        if self.window is None:
            return VALUES_PER_TRAIT
        return max(MIN_VALUES_PER_BUCKET, VALUES_PER_TRAIT // self.window.buckets)

    def matches(self, event: Event) -> bool:
        """The whole filter: event type, event names and ``where``."""
        if self.event_type is not None and event.type != self.event_type:
            return False
        if self.events:
            name = event.event if event.type == "track" else event.name
            if event.type not in NAMED_TYPES or name not in self.events:
                return False
        return self.where_filter is None or self.where_filter(event)

    def _problems(self) -> list[ErrorDetail]:
        found: list[ErrorDetail] = []

        def problem(where: str, message: str) -> None:
            found.append(ErrorDetail(where, message))

        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            problem("name", f"{self.name!r} is not a name: letters, digits and _, up to 64")
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            problem("kind", f"{self.kind!r} is not a kind: one of {', '.join(KINDS)}")
        if self.event_type is not None and (
            not isinstance(self.event_type, str) or self.event_type not in EVENT_TYPES
        ):
            problem("type", f"{self.event_type!r} is not an event type: {sorted(EVENT_TYPES)}")
        if not all(isinstance(e, str) and e for e in self.events):
            problem("events", "event names must be non-empty strings")
        elif self.events and (self.event_type or "track") not in NAMED_TYPES:
            problem("events", f"{self.event_type} events have no name to match")
        if self.kind in KINDS and self.kind in PROPERTY_KINDS:
            if not self.property:
                problem("property", f"a {self.kind} trait needs the property it aggregates")
        elif self.property is not None:
            problem("property", f"a {self.kind} trait takes no property")
        if self.property is not None:
            try:
                split_path(self.property) if isinstance(self.property, str) else split_path("")
            except ValueError as exc:
                problem("property", str(exc))
        if self.window is not None and not isinstance(self.window, Window):
            problem("window", "use parse_window() to build a window")
        return found

    def _fingerprint(self) -> str:
        shape = [
            self.kind,
            self.event_type,
            sorted(self.events),
            self.where,
            self.property,
            self.window.seconds if self.window else 0,
            self.bucket_seconds,
            self.values_cap,
        ]
        encoded = msgspec.json.encode(shape, order="sorted", enc_hook=repr)
        return hashlib.blake2b(encoded, digest_size=6).hexdigest()


_FIELDS = frozenset(
    {"name", "kind", "type", "event", "events", "where", "property", "window", "description"}
)


def parse_definition(
    data: Any, location: str = "", *, compile_where: WhereCompiler = rule_or_equality_where
) -> ComputedTraitDef:
    """A definition from a mapping: ``name``, ``kind``, optional ``type``, ``event`` (one name)
    or ``events`` (names), ``where``, ``property``, ``window`` and ``description``.

    Raises:
        ValidationError: with one detail per problem, located under ``location``.
    """

    def fail(details: list[ErrorDetail]) -> ValidationError:
        located = [
            ErrorDetail(f"{location}.{d.location}" if location else d.location, d.message, d.code)
            if d.location
            else ErrorDetail(location, d.message, d.code)
            for d in details
        ]
        label = data.get("name") if isinstance(data, Mapping) else None
        what = f"computed trait {label!r}" if isinstance(label, str) else "computed trait"
        return ValidationError(
            f"{what}: " + "; ".join(f"{d.location or 'definition'}: {d.message}" for d in located),
            details=located,
        )

    if not isinstance(data, Mapping):
        raise fail([ErrorDetail("", f"expected a mapping, not {type(data).__name__}")])
    details = [ErrorDetail(str(k), "unknown field") for k in data if k not in _FIELDS]
    missing = [ErrorDetail(k, "required") for k in ("name", "kind") if k not in data]
    if missing:
        raise fail(details + missing)
    events: Any = data.get("events", ())
    if "event" in data:
        if "events" in data:
            details.append(ErrorDetail("event", "give 'event' or 'events', not both"))
        events = [data["event"]]
    if isinstance(events, str) or not isinstance(events, list | tuple):
        details.append(ErrorDetail("events", "expected a list of event names"))
        events = ()
    description = data.get("description") or ""
    if not isinstance(description, str):
        details.append(ErrorDetail("description", "expected a string"))
        description = ""
    window: Window | None = None
    try:
        window = parse_window(data.get("window"))
    except ValueError as exc:
        details.append(ErrorDetail("window", str(exc)))
    where = data.get("where")
    where_filter: EventFilter | None = None
    if where is not None:
        try:
            where_filter = compile_where(where)
        except ValidationError as exc:
            details.extend(exc.details or [ErrorDetail("where", exc.message)])
            where = None
    # the rest is checked by the definition itself; collect its problems with those above
    try:
        definition = ComputedTraitDef(
            name=data["name"],
            kind=cast(Kind, data["kind"]),
            event_type=data.get("type"),
            events=tuple(events),
            where=where,
            property=data.get("property"),
            window=window,
            description=description,
            where_filter=where_filter,
        )
    except ValidationError as exc:
        details.extend(exc.details)
    if details:
        raise fail(details)
    return definition


def parse_definitions(
    items: Any,
    location: str = "computed_traits",
    *,
    compile_where: WhereCompiler = rule_or_equality_where,
) -> list[ComputedTraitDef]:
    """Definitions from a list of mappings (``None`` is an empty list); names are unique.

    Raises:
        ValidationError: listing the problems of every definition.
    """
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValidationError(
            f"{location}: expected a list of definitions",
            details=[ErrorDetail(location, "expected a list")],
        )
    parsed: list[ComputedTraitDef] = []
    details: list[ErrorDetail] = []
    messages: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            definition = parse_definition(item, f"{location}[{i}]", compile_where=compile_where)
        except ValidationError as exc:
            details.extend(exc.details)
            messages.append(exc.message)
            continue
        if definition.name in seen:
            detail = ErrorDetail(f"{location}[{i}].name", f"{definition.name!r} is defined twice")
            details.append(detail)
            messages.append(detail.message)
        seen.add(definition.name)
        parsed.append(definition)
    if details:
        raise ValidationError("; ".join(messages), details=details)
    return parsed


def is_number(value: Any) -> bool:
    """An int or a finite float, not a bool."""
    cls = value.__class__
    return cls is int or (cls is float and math.isfinite(value))
