"""Identity resolution: which profile an event belongs to, and which profiles it joins.

The rules, in order:

1. A ``user_id`` decides: its profile, or, if the user id is new, the profile of the event's
   other identifiers that has no user id yet (anonymous browsing, then login), or a new one.
2. Without a user id, the highest-priority identifier that has a profile decides
   (user_id > email > external ids > alias > anonymous_id).
3. Every other profile the event's identifiers point at is merged into the chosen one, unless
   the merge would join two different user ids, or would take one profile over the per-type
   identifier limit (so one shared device cannot glue many customers together). A refused merge
   is recorded, like a merge, with its reason; the event still applies to the chosen profile.
4. Unknown identifiers are linked to the chosen profile within the same limits.
5. ``alias``: ``previousId`` is looked up as an alias, anonymous id or user id; the profile it
   names is merged like any other. A self-alias (``previousId == userId``) changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from relevo.profiles.identifiers import ALIAS, ANONYMOUS_ID, USER_ID, Identifier


class IdentityView(Protocol):
    """What resolution needs to read of the identity graph (inside the caller's transaction)."""

    def profile_of(self, identifier: Identifier) -> str | None: ...

    def identifiers_of(self, profile_id: str) -> list[Identifier]: ...


class IdentityLimits(Protocol):
    def identity_limit(self, identifier_type: str) -> int: ...


@dataclass(frozen=True)
class MergeStep:
    merged: str
    identifier: Identifier


@dataclass(frozen=True)
class Refusal:
    identifier: Identifier
    other_profile: str | None
    reason: str


@dataclass
class Resolution:
    profile_id: str
    created: bool
    links: list[Identifier] = field(default_factory=list)
    merges: list[MergeStep] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def resolve(
    identifiers: list[Identifier],
    view: IdentityView,
    limits: IdentityLimits,
    new_profile_id: Callable[[], str],
) -> Resolution:
    """Plan how an event with these identifiers (highest priority first) joins the graph;
    ``new_profile_id`` names the profile it creates (called only then)."""
    owners = {ident: _owner(ident, view) for ident in identifiers}
    primary = _choose(identifiers, owners, view)
    if primary is not None and all(owner == primary for owner in owners.values()):
        return Resolution(primary, created=False)  # the common case: nothing new to join
    created = primary is None
    resolution = Resolution(new_profile_id() if primary is None else primary, created)
    held = Counter(i.type for i in ([] if created else view.identifiers_of(resolution.profile_id)))
    user_ids = set() if created else _user_ids(view, resolution.profile_id)

    for ident in identifiers:
        owner = owners[ident]
        if owner == resolution.profile_id or any(m.merged == owner for m in resolution.merges):
            continue
        if owner is None:
            reason = _link_refusal(ident, held, user_ids, limits)
            if reason:
                resolution.refusals.append(Refusal(ident, None, reason))
                continue
            resolution.links.append(ident)
            held[ident.type] += 1
            if ident.type == USER_ID:
                user_ids.add(ident.value)
            continue
        theirs = view.identifiers_of(owner)
        reason = _merge_refusal(held, user_ids, theirs, limits)
        if reason:
            resolution.refusals.append(Refusal(ident, owner, reason))
            continue
        resolution.merges.append(MergeStep(owner, ident))
        held.update(i.type for i in theirs)
        user_ids.update(i.value for i in theirs if i.type == USER_ID)
    return resolution


def lookups(identifiers: list[Identifier]) -> list[Identifier]:
    """Every identifier ``resolve`` may look up for these (aliases are tried as other types)."""
    found = list(identifiers)
    for ident in identifiers:
        if ident.type == ALIAS:
            found += [Identifier(ANONYMOUS_ID, ident.value), Identifier(USER_ID, ident.value)]
        elif ident.type == ANONYMOUS_ID:
            found.append(Identifier(ALIAS, ident.value))
    return found


def _owner(ident: Identifier, view: IdentityView) -> str | None:
    owner = view.profile_of(ident)
    if owner is None and ident.type == ALIAS:
        for as_type in (ANONYMOUS_ID, USER_ID):
            owner = view.profile_of(Identifier(as_type, ident.value))
            if owner is not None:
                break
    elif owner is None and ident.type == ANONYMOUS_ID:
        # the id was aliased before any event of its own was applied (the log orders events
        # per profile key only, so an alias may well be processed before the history it names).
        # Not for user ids: a user id is never joined to another user's profile, in any order.
        owner = view.profile_of(Identifier(ALIAS, ident.value))
    return owner


def _choose(
    identifiers: list[Identifier], owners: dict[Identifier, str | None], view: IdentityView
) -> str | None:
    user = next((i for i in identifiers if i.type == USER_ID), None)
    if user is None:
        return next((owners[i] for i in identifiers if owners[i] is not None), None)
    if owners[user] is not None:
        return owners[user]
    for ident in identifiers:
        owner = owners[ident]
        if owner is not None and not (_user_ids(view, owner) - {user.value}):
            return owner
    return None


def _user_ids(view: IdentityView, profile_id: str) -> set[str]:
    return {i.value for i in view.identifiers_of(profile_id) if i.type == USER_ID}


def _link_refusal(
    ident: Identifier, held: Counter[str], user_ids: set[str], limits: IdentityLimits
) -> str | None:
    if ident.type == USER_ID and user_ids - {ident.value}:
        return "the profile already has a different user_id"
    limit = limits.identity_limit(ident.type)
    if held[ident.type] + 1 > limit:
        return f"the profile already holds {held[ident.type]} {ident.type} (limit {limit})"
    return None


def _merge_refusal(
    held: Counter[str], user_ids: set[str], theirs: list[Identifier], limits: IdentityLimits
) -> str | None:
    their_users = {i.value for i in theirs if i.type == USER_ID}
    if user_ids and their_users and user_ids != their_users:
        return "the two profiles have different user_ids"
    combined = held + Counter(i.type for i in theirs)
    for id_type, count in combined.items():
        limit = limits.identity_limit(id_type)
        if count > limit:
            return f"the merged profile would hold {count} {id_type} (limit {limit})"
    return None
