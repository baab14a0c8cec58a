"""Identifiers: the ``(type, value)`` pairs of the identity graph, and those an event carries."""

from __future__ import annotations

from typing import NamedTuple

from relevo.errors import ValidationError
from relevo.events.model import Event


class Identifier(NamedTuple):
    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


USER_ID = "user_id"
ANONYMOUS_ID = "anonymous_id"
EMAIL = "email"
ALIAS = "alias"

# Which identifier decides the profile when an event's identifiers point at several.
PRIORITY: dict[str, int] = {USER_ID: 0, EMAIL: 1, ALIAS: 3, ANONYMOUS_ID: 4}
EXTERNAL_PRIORITY = 2


def normalise_value(id_type: str, value: str) -> str:
    return value.strip().lower() if id_type == EMAIL else value


def parse_identifier(text: str) -> Identifier:
    """``user_id:42`` -> Identifier("user_id", "42"); the value may itself hold colons."""
    id_type, sep, value = text.partition(":")
    if not sep or not id_type or not value:
        raise ValidationError(f"{text!r} is not a profile id or a type:value identifier")
    return Identifier(id_type, normalise_value(id_type, value))


def identifiers_of(event: Event) -> list[Identifier]:
    """The identifiers an event carries, highest priority first, without repeats."""
    found: list[Identifier] = []
    if event.user_id is not None:
        found.append(Identifier(USER_ID, event.user_id))
    email = _email(event)
    if email:
        found.append(Identifier(EMAIL, email))
    external = event.context.get("externalIds")
    has_external = isinstance(external, list) and bool(external)
    if isinstance(external, list):
        for item in external:
            if isinstance(item, dict):
                id_type, value = item.get("type"), item.get("id")
                if (
                    isinstance(id_type, str)
                    and id_type
                    and isinstance(value, str | int)
                    and value != ""
                ):
                    id_type = id_type.strip().lower()
                    found.append(Identifier(id_type, normalise_value(id_type, str(value))))
    # a self-alias (analytics-next sends previousId == userId) names no second identity
    if event.type == "alias" and event.previous_id not in (None, event.user_id):
        found.append(Identifier(ALIAS, event.previous_id))
    if event.anonymous_id is not None:
        found.append(Identifier(ANONYMOUS_ID, event.anonymous_id))
    # external ids may repeat an id or use a well-known type (two equal ones would be linked
    # twice: the identities primary key refuses that and the event becomes poison); without
    # them the list is built in priority order and has no repeats
    if has_external:
        found = list(dict.fromkeys(found))
        found.sort(key=lambda ident: PRIORITY.get(ident.type, EXTERNAL_PRIORITY))
    return found


def _email(event: Event) -> str | None:
    value = event.traits.get("email")
    if not isinstance(value, str):
        context_traits = event.context.get("traits")
        value = context_traits.get("email") if isinstance(context_traits, dict) else None
    if isinstance(value, str) and "@" in value:
        return normalise_value(EMAIL, value)
    return None
