"""Segment definitions and their compiled form."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from relevo.errors import ErrorDetail, ValidationError
from relevo.rules import Rule, compile_rule

# Segments read the profile: its traits, computed traits and profile facts. Not the current
# event (event conditions belong in computed traits) and not other segments (no cycles).
SEGMENT_ROOTS = frozenset({"traits", "computed", "profile"})
NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class SegmentDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    rule: str | dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Segment:
    definition: SegmentDefinition
    rule: Rule
    version: str  # a digest of the definition: a changed rule is backfilled again
    name: str = field(init=False)  # the definition's, kept at hand: read per evaluation

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.definition.name)


def compile_segment(definition: SegmentDefinition) -> Segment:
    """Validate and compile a definition. Raises ValidationError (with the rule's position)."""
    if not NAME.match(definition.name):
        raise ValidationError(
            f"segment name {definition.name!r} must be 1-64 of a-z, 0-9, _ and -, "
            "starting with a letter or digit",
            details=[ErrorDetail("name", "invalid segment name", "invalid_name")],
        )
    rule = compile_rule(definition.rule, roots=SEGMENT_ROOTS)
    digest = hashlib.sha256(msgspec.json.encode(definition)).hexdigest()[:16]
    return Segment(definition, rule, digest)


def parse_definition(data: Any, where: str = "$") -> SegmentDefinition:
    """A definition from decoded YAML/JSON. Raises ValidationError naming the bad field."""
    try:
        return msgspec.convert(data, SegmentDefinition)
    except msgspec.ValidationError as exc:
        raise ValidationError(
            f"invalid segment definition: {exc}",
            details=[ErrorDetail(where, str(exc), "invalid_definition")],
        ) from exc
