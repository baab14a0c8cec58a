"""Identifiers of an event, and identity resolution: scenarios for each merge rule, plus
Hypothesis properties over random histories.

``Graph`` is an in-memory identity graph; ``Graph.apply`` does what the processor does with a
``Resolution`` (merges move every identifier of the merged profile, then links attach new ones),
and it fails loudly where the SQL store would (linking an identifier that already has a profile).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from relevo.errors import ValidationError
from relevo.events.model import Event
from relevo.profiles.identifiers import (
    ALIAS,
    ANONYMOUS_ID,
    EMAIL,
    USER_ID,
    Identifier,
    identifiers_of,
    parse_identifier,
)
from relevo.profiles.identity import MergeStep, Resolution, resolve

AT = datetime(2026, 11, 24, tzinfo=UTC)
_ids = itertools.count()


def ev(
    type: str = "track",
    *,
    user: str | None = None,
    anon: str | None = None,
    email: str | None = None,
    previous: str | None = None,
    context: dict[str, Any] | None = None,
) -> Event:
    n = next(_ids)
    return Event(
        type=type,  # type: ignore[arg-type]
        message_id=f"m-{n}",
        source="web",
        received_at=AT,
        timestamp=AT + timedelta(seconds=n),
        user_id=user,
        anonymous_id=anon,
        previous_id=previous,
        event="Viewed" if type == "track" else None,
        traits={"email": email} if email else {},
        context=context or {},
    )


def uid(value: str) -> Identifier:
    return Identifier(USER_ID, value)


def aid(value: str) -> Identifier:
    return Identifier(ANONYMOUS_ID, value)


def mail(value: str) -> Identifier:
    return Identifier(EMAIL, value)


@dataclass
class Limits:
    per_type: dict[str, int]
    default: int = 50

    def identity_limit(self, identifier_type: str) -> int:
        return self.per_type.get(identifier_type, self.default)


DEFAULT_LIMITS = Limits({"anonymous_id": 100, "email": 10, "user_id": 1})


@dataclass
class Graph:
    owner: dict[Identifier, str] = field(default_factory=dict)
    members: dict[str, list[Identifier]] = field(default_factory=dict)
    retired: dict[str, str] = field(default_factory=dict)
    _next: itertools.count[int] = field(default_factory=itertools.count)

    # -- IdentityView -----------------------------------------------------------------------
    def profile_of(self, identifier: Identifier) -> str | None:
        return self.owner.get(identifier)

    def identifiers_of(self, profile_id: str) -> list[Identifier]:
        return list(self.members.get(profile_id, []))

    # -- what the processor does with a resolution ------------------------------------------
    def apply(self, resolution: Resolution) -> None:
        survivor = resolution.profile_id
        assert survivor not in self.retired, "an event was applied to a retired profile"
        if resolution.created:
            assert survivor not in self.members, "a 'new' profile id was already in use"
            assert resolution.links, "a new profile with no identifier could never be found"
            self.members[survivor] = []
        else:
            assert survivor in self.members, "resolved to a profile that does not exist"
        for step in resolution.merges:
            self.absorb(survivor, step.merged)
        for identifier in resolution.links:
            self.link(identifier, survivor)

    def link(self, identifier: Identifier, profile_id: str) -> None:
        # identities has PRIMARY KEY (type, value): a second link would fail in the store
        assert identifier not in self.owner, f"{identifier} linked twice"
        self.owner[identifier] = profile_id
        self.members[profile_id].append(identifier)

    def absorb(self, survivor: str, merged: str) -> None:
        assert survivor != merged, "a profile merged into itself"
        assert merged in self.members and merged not in self.retired, "merged a dead profile"
        for identifier in self.members.pop(merged):
            self.owner[identifier] = survivor
            self.members[survivor].append(identifier)
        self.retired[merged] = survivor

    def new_id(self) -> str:
        return f"p{next(self._next)}"

    # -- reading ----------------------------------------------------------------------------
    def user_ids(self, profile_id: str) -> set[str]:
        return {i.value for i in self.members[profile_id] if i.type == USER_ID}

    def where(self, value: str) -> str | None:
        """The profile an anonymous id lands in (linked as such, or only aliased)."""
        return self.owner.get(aid(value)) or self.owner.get(Identifier(ALIAS, value))


def process(graph: Graph, event: Event, limits: Limits = DEFAULT_LIMITS) -> Resolution:
    resolution = resolve(identifiers_of(event), graph, limits, graph.new_id)
    graph.apply(resolution)
    return resolution


# -- identifiers_of ---------------------------------------------------------------------------


class TestIdentifiersOf:
    def test_priority_order_and_types(self) -> None:
        event = ev(
            "identify",
            user="u-1",
            anon="a-1",
            email="Ann@Example.COM ",
            context={"externalIds": [{"id": "c-9", "type": "Shopify_Customer"}]},
        )
        assert identifiers_of(event) == [
            uid("u-1"),
            mail("ann@example.com"),
            Identifier("shopify_customer", "c-9"),
            aid("a-1"),
        ]

    def test_alias_previous_id_sits_between_external_and_anonymous(self) -> None:
        event = ev("alias", user="u-1", previous="a-old", anon="a-1")
        assert identifiers_of(event) == [uid("u-1"), Identifier(ALIAS, "a-old"), aid("a-1")]

    def test_previous_id_only_counts_on_alias(self) -> None:
        assert identifiers_of(ev(user="u-1", previous="x")) == [uid("u-1")]

    def test_a_self_alias_names_no_second_identity(self) -> None:
        assert identifiers_of(ev("alias", user="u-1", previous="u-1")) == [uid("u-1")]

    def test_email_from_context_traits_when_traits_have_none(self) -> None:
        event = ev(anon="a-1", context={"traits": {"email": "B@Example.com"}})
        assert identifiers_of(event) == [mail("b@example.com"), aid("a-1")]

    def test_traits_email_wins_over_context_traits(self) -> None:
        event = ev(anon="a", email="a@x.io", context={"traits": {"email": "b@x.io"}})
        assert mail("a@x.io") in identifiers_of(event)
        assert mail("b@x.io") not in identifiers_of(event)

    @pytest.mark.parametrize("bad", ["", "not-an-email", 42, None, ["a@x.io"]])
    def test_values_that_are_not_emails_are_ignored(self, bad: object) -> None:
        event = ev(anon="a-1", context={"traits": {"email": bad}})
        assert identifiers_of(event) == [aid("a-1")]

    def test_malformed_external_ids_are_skipped(self) -> None:
        external = [
            {"id": "ok", "type": "crm"},
            {"id": 7, "type": "ticket"},
            {"id": "", "type": "crm"},
            {"id": "x", "type": ""},
            {"id": None, "type": "crm"},
            {"id": "x"},
            "crm:1",
            None,
        ]
        event = ev(anon="a", context={"externalIds": external})
        assert identifiers_of(event) == [
            Identifier("crm", "ok"),
            Identifier("ticket", "7"),
            aid("a"),
        ]

    def test_external_ids_not_a_list_are_ignored(self) -> None:
        assert identifiers_of(ev(anon="a", context={"externalIds": {"crm": "1"}})) == [aid("a")]

    def test_external_email_is_normalised_and_not_repeated(self) -> None:
        event = ev(
            anon="a",
            email="ann@x.io",
            context={"externalIds": [{"id": "ANN@x.io", "type": "email"}]},
        )
        assert identifiers_of(event) == [mail("ann@x.io"), aid("a")]

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"anon": "a"}, [aid("a")]),
            ({"user": "u"}, [uid("u")]),
        ],
    )
    def test_an_external_id_repeating_a_known_one_is_not_repeated(
        self, fields: dict[str, str], expected: list[Identifier]
    ) -> None:
        ((id_type, value),) = expected
        event = ev(**fields, context={"externalIds": [{"id": value, "type": id_type}]})
        assert identifiers_of(event) == expected

    def test_the_same_id_as_user_and_anonymous_id_is_two_identifiers(self) -> None:
        assert identifiers_of(ev(user="x", anon="x")) == [uid("x"), aid("x")]


class TestParseIdentifier:
    def test_type_and_value(self) -> None:
        assert parse_identifier("user_id:42") == uid("42")

    def test_the_value_may_hold_colons(self) -> None:
        assert parse_identifier("crm:a:b:c") == Identifier("crm", "a:b:c")

    def test_emails_are_lower_cased(self) -> None:
        assert parse_identifier("email:Ann@Example.COM") == mail("ann@example.com")

    def test_str_round_trips(self) -> None:
        assert parse_identifier(str(aid("a:1"))) == aid("a:1")

    @pytest.mark.parametrize("text", ["user_id", ":42", "user_id:", "", ":"])
    def test_malformed_identifiers_are_rejected(self, text: str) -> None:
        with pytest.raises(ValidationError):
            parse_identifier(text)


# -- scenarios, one per rule ----------------------------------------------------------------------


class TestUserIdDecides:
    def test_a_first_event_creates_a_profile_with_all_its_identifiers(self) -> None:
        graph = Graph()
        res = process(graph, ev("identify", user="u", anon="a", email="e@x.io"))
        assert res.created
        assert res.links == [uid("u"), mail("e@x.io"), aid("a")]
        assert not res.merges and not res.refusals

    def test_a_new_profile_id_is_made_only_for_a_new_profile(self) -> None:
        graph, made = Graph(), []

        def new_id() -> str:
            made.append(graph.new_id())
            return made[-1]

        first = resolve(identifiers_of(ev(user="u")), graph, DEFAULT_LIMITS, new_id)
        graph.apply(first)
        again = resolve(identifiers_of(ev(user="u")), graph, DEFAULT_LIMITS, new_id)
        assert made == [first.profile_id]
        assert (again.profile_id, again.created) == (first.profile_id, False)

    def test_known_user_id_decides_and_new_identifiers_are_linked(self) -> None:
        graph = Graph()
        first = process(graph, ev("identify", user="u", anon="a1"))
        again = process(graph, ev(user="u", anon="a2"))
        assert (again.profile_id, again.created) == (first.profile_id, False)
        assert again.links == [aid("a2")]
        assert graph.owner[aid("a2")] == first.profile_id

    def test_anonymous_browsing_then_login_stitches_into_one_profile(self) -> None:
        graph = Graph()
        browsing = process(graph, ev(anon="a"))
        process(graph, ev("page", anon="a"))
        login = process(graph, ev("identify", user="u", anon="a"))
        assert (login.profile_id, login.created) == (browsing.profile_id, False)
        assert login.links == [uid("u")]
        assert not login.merges
        later = process(graph, ev(user="u"))
        assert later.profile_id == browsing.profile_id

    def test_login_on_a_second_device_merges_its_anonymous_profile(self) -> None:
        graph = Graph()
        laptop = process(graph, ev("identify", user="u", anon="laptop"))
        phone = process(graph, ev(anon="phone"))
        login = process(graph, ev("identify", user="u", anon="phone"))
        assert login.profile_id == laptop.profile_id
        assert login.merges == [MergeStep(phone.profile_id, aid("phone"))]
        assert graph.owner[aid("phone")] == laptop.profile_id
        assert graph.retired[phone.profile_id] == laptop.profile_id

    def test_a_new_user_on_an_anonymous_profile_of_another_user_gets_its_own(self) -> None:
        graph = Graph()
        ann = process(graph, ev("identify", user="ann", anon="shared"))
        bob = process(graph, ev("identify", user="bob", anon="shared"))
        assert bob.created and bob.profile_id != ann.profile_id
        assert bob.links == [uid("bob")]
        (refusal,) = bob.refusals
        assert refusal.identifier == aid("shared")
        assert refusal.other_profile == ann.profile_id
        assert "user_id" in refusal.reason
        assert graph.owner[aid("shared")] == ann.profile_id

    def test_an_email_cannot_join_two_users(self) -> None:
        graph = Graph()
        ann = process(graph, ev("identify", user="ann", email="family@x.io"))
        bob = process(graph, ev("identify", user="bob", email="family@x.io"))
        assert bob.profile_id != ann.profile_id
        assert [r.identifier for r in bob.refusals] == [mail("family@x.io")]
        assert graph.user_ids(ann.profile_id) == {"ann"}
        assert graph.user_ids(bob.profile_id) == {"bob"}

    def test_two_known_users_meeting_on_a_device_stay_apart(self) -> None:
        graph = Graph()
        ann = process(graph, ev("identify", user="ann", anon="a-ann"))
        bob = process(graph, ev("identify", user="bob", anon="a-bob"))
        crossed = process(graph, ev(user="bob", anon="a-ann"))
        assert crossed.profile_id == bob.profile_id
        assert not crossed.merges
        (refusal,) = crossed.refusals
        assert (refusal.identifier, refusal.other_profile) == (aid("a-ann"), ann.profile_id)
        assert "different user_ids" in refusal.reason
        assert graph.owner[aid("a-ann")] == ann.profile_id

    def test_new_user_prefers_the_anonymous_profile_without_a_user(self) -> None:
        graph = Graph()
        ann = process(graph, ev("identify", user="ann", email="e@x.io"))
        anon = process(graph, ev(anon="a"))
        # e@x.io belongs to ann; the anonymous profile is free: bob logs into that one
        bob = process(graph, ev("identify", user="bob", email="e@x.io", anon="a"))
        assert bob.profile_id == anon.profile_id
        assert [r.identifier for r in bob.refusals] == [mail("e@x.io")]
        assert graph.owner[mail("e@x.io")] == ann.profile_id


class TestWithoutUserId:
    def test_the_highest_priority_identifier_decides_and_the_rest_merge(self) -> None:
        graph = Graph()
        by_email = process(graph, ev("identify", anon="a1", email="e@x.io"))
        other = process(graph, ev(anon="a2"))
        res = process(graph, ev(anon="a2", context={"traits": {"email": "E@x.io"}}))
        assert res.profile_id == by_email.profile_id
        assert res.merges == [MergeStep(other.profile_id, aid("a2"))]

    def test_an_external_id_outranks_an_anonymous_id(self) -> None:
        graph = Graph()
        crm = [{"id": "c-1", "type": "crm"}]
        known = process(graph, ev(anon="a1", context={"externalIds": crm}))
        stray = process(graph, ev(anon="a2"))
        res = process(graph, ev(anon="a2", context={"externalIds": crm}))
        assert res.profile_id == known.profile_id
        assert [m.merged for m in res.merges] == [stray.profile_id]

    def test_unknown_identifiers_only_make_a_new_profile(self) -> None:
        graph = Graph()
        first = process(graph, ev(anon="a1"))
        second = process(graph, ev(anon="a2"))
        assert second.created and second.profile_id != first.profile_id


class TestRepeatedIdentifiers:
    def test_an_identifier_carried_twice_is_linked_once(self) -> None:
        graph = Graph()
        external = [{"id": "a", "type": "anonymous_id"}]
        res = process(graph, ev(anon="a", context={"externalIds": external}))
        assert res.links == [aid("a")]
        assert not res.refusals


class TestLimits:
    def test_at_most_100_anonymous_ids_per_profile(self) -> None:
        graph = Graph()
        for n in range(100):
            res = process(graph, ev(user="kiosk-user", anon=f"a{n}"))
            assert not res.refusals
        over = process(graph, ev(user="kiosk-user", anon="a100"))
        assert over.profile_id == res.profile_id  # the event still applies
        (refusal,) = over.refusals
        assert refusal.identifier == aid("a100")
        assert refusal.other_profile is None
        assert "100" in refusal.reason and "anonymous_id" in refusal.reason
        assert aid("a100") not in graph.owner
        assert Counter(i.type for i in graph.members[res.profile_id])[ANONYMOUS_ID] == 100

    def test_a_shared_device_cannot_glue_customers_by_email(self) -> None:
        graph = Graph()
        results = [
            process(graph, ev("identify", anon="kiosk", email=f"c{n}@x.io")) for n in range(12)
        ]
        kiosk = graph.owner[aid("kiosk")]
        assert {r.profile_id for r in results} == {kiosk}
        emails = [i for i in graph.members[kiosk] if i.type == EMAIL]
        assert len(emails) == 10
        refused = [r.identifier for res in results for r in res.refusals]
        assert refused == [mail("c10@x.io"), mail("c11@x.io")]

    def test_many_users_on_one_device_stay_separate(self) -> None:
        graph = Graph()
        profiles = [
            process(graph, ev("identify", user=f"u{n}", anon="kiosk")).profile_id for n in range(5)
        ]
        assert len(set(profiles)) == 5
        assert graph.owner[aid("kiosk")] == profiles[0]

    def test_a_merge_over_the_limit_is_refused(self) -> None:
        limits = Limits({"anonymous_id": 2, "user_id": 1})
        graph = Graph()
        user = process(graph, ev("identify", user="u", anon="a1"), limits)
        process(graph, ev(user="u", anon="a2"), limits)
        stray = process(graph, ev(anon="a3"), limits)
        res = process(graph, ev("identify", user="u", anon="a3"), limits)
        assert res.profile_id == user.profile_id
        assert not res.merges
        (refusal,) = res.refusals
        assert (refusal.identifier, refusal.other_profile) == (aid("a3"), stray.profile_id)
        assert "3 anonymous_id (limit 2)" in refusal.reason
        assert graph.owner[aid("a3")] == stray.profile_id

    def test_a_second_user_id_is_refused_even_with_room_for_it(self) -> None:
        graph = Graph()
        limits = Limits({"user_id": 5})
        external = [{"id": "u2", "type": "user_id"}]
        res = process(graph, ev(user="u1", anon="a", context={"externalIds": external}), limits)
        assert [r.identifier for r in res.refusals] == [uid("u2")]
        assert graph.user_ids(res.profile_id) == {"u1"}


class TestAlias:
    def test_a_self_alias_changes_nothing(self) -> None:
        graph = Graph()
        known = process(graph, ev("identify", user="user-1", anon="a"))
        before = dict(graph.owner)
        res = process(graph, ev("alias", user="user-1", previous="user-1"))
        assert res.profile_id == known.profile_id
        assert (res.created, res.links, res.merges, res.refusals) == (False, [], [], [])
        assert graph.owner == before

    def test_a_first_call_that_is_a_self_alias_links_only_the_user(self) -> None:
        graph = Graph()
        res = process(graph, ev("alias", user="user-1", previous="user-1"))
        assert res.links == [uid("user-1")]

    def test_alias_of_an_anonymous_id_joins_the_user(self) -> None:
        graph = Graph()
        anon = process(graph, ev(anon="anon-123"))
        res = process(graph, ev("alias", user="user-1", previous="anon-123"))
        assert res.profile_id == anon.profile_id
        assert res.links == [uid("user-1")]
        assert graph.owner[uid("user-1")] == graph.owner[aid("anon-123")]

    def test_alias_merges_the_anonymous_history_into_a_known_user(self) -> None:
        graph = Graph()
        user = process(graph, ev("identify", user="user-1"))
        anon = process(graph, ev(anon="anon-123"))
        res = process(graph, ev("alias", user="user-1", previous="anon-123"))
        assert res.profile_id == user.profile_id
        assert res.merges == [MergeStep(anon.profile_id, Identifier(ALIAS, "anon-123"))]
        assert graph.owner[aid("anon-123")] == user.profile_id

    def test_an_alias_processed_before_the_anonymous_history_still_joins_it(self) -> None:
        # alias is partitioned by userId, the anonymous events by anonymousId: the processor
        # may well apply the alias first
        graph = Graph()
        alias = process(graph, ev("alias", user="user-1", previous="anon-123"))
        assert Identifier(ALIAS, "anon-123") in alias.links
        late = process(graph, ev(anon="anon-123"))
        assert late.profile_id == alias.profile_id
        assert not late.created

    def test_alias_of_another_user_id_is_refused(self) -> None:
        graph = Graph()
        old = process(graph, ev("identify", user="old-user"))
        res = process(graph, ev("alias", user="new-user", previous="old-user"))
        assert res.profile_id != old.profile_id
        (refusal,) = res.refusals
        assert refusal.other_profile == old.profile_id
        assert graph.user_ids(old.profile_id) == {"old-user"}

    def test_alias_between_user_ids_does_not_depend_on_processing_order(self) -> None:
        # the same two calls, applied in either order (they sit in different partitions),
        # must leave old-user and new-user equally apart (two user ids never merge)
        first = Graph()
        process(first, ev("identify", user="old-user", anon="a-old"))
        a = process(first, ev("alias", user="new-user", previous="old-user"))
        second = Graph()
        process(second, ev("alias", user="new-user", previous="old-user"))
        b = process(second, ev("identify", user="old-user", anon="a-old"))
        assert a.profile_id != first.owner[uid("old-user")]
        assert b.profile_id != second.owner[uid("new-user")], (
            "events of old-user were applied to new-user's profile"
        )


# -- properties -----------------------------------------------------------------------------------

USERS = ["u0", "u1", "u2", "u3"]
ANONS = ["a0", "a1", "a2", "a3", "a4", "a5"]
EMAILS = ["e0@x.io", "e1@x.io", "e2@x.io"]

_maybe = st.none().__or__


@st.composite
def events(
    draw: st.DrawFn,
    previous_ids: list[str],
    users: list[str] = USERS,
    anons: list[str] = ANONS,
    external: bool = False,
) -> Event:
    kind = draw(st.sampled_from(["identify", "track", "track", "alias"]))
    user = draw(_maybe(st.sampled_from(users)))
    if kind == "alias":
        return ev(
            "alias",
            user=user or draw(st.sampled_from(users)),
            previous=draw(st.sampled_from(previous_ids)),
            anon=draw(_maybe(st.sampled_from(anons))),
        )
    anon = draw(st.sampled_from(anons)) if user is None else draw(_maybe(st.sampled_from(anons)))
    email = draw(_maybe(st.sampled_from(EMAILS)))
    context: dict[str, Any] = {}
    if external:
        # external ids that may repeat the call's own ids, or use their well-known types
        pairs = st.tuples(
            st.sampled_from([ANONYMOUS_ID, USER_ID, EMAIL, "crm"]),
            st.sampled_from([*anons[:2], *users[:2], *EMAILS[:1]]),
        )
        ids = draw(st.lists(pairs, max_size=2))
        context["externalIds"] = [{"type": t, "id": v} for t, v in ids]
    if kind == "track" and email is not None:
        context["traits"] = {"email": email}
        return ev(kind, user=user, anon=anon, context=context)
    return ev(kind, user=user, anon=anon, email=email, context=context)


LIMIT_SETS = [
    Limits({"anonymous_id": 2, "email": 1, "user_id": 1, "alias": 1}, default=2),
    Limits({"anonymous_id": 3, "email": 2, "user_id": 3, "alias": 2}, default=3),
    DEFAULT_LIMITS,
]
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_graph(graph: Graph, limits: Limits) -> None:
    seen: set[Identifier] = set()
    for profile_id, identifiers in graph.members.items():
        assert profile_id not in graph.retired
        # (a) no profile ever holds two different user_ids
        assert len(graph.user_ids(profile_id)) <= 1, identifiers
        # (c) no profile exceeds the per-type limits
        for id_type, count in Counter(i.type for i in identifiers).items():
            assert count <= limits.identity_limit(id_type), (profile_id, id_type, count)
        # (b) every identifier maps to exactly one profile, and the two indexes agree
        for identifier in identifiers:
            assert identifier not in seen, f"{identifier} is in two profiles"
            seen.add(identifier)
            assert graph.owner[identifier] == profile_id
    assert seen == set(graph.owner)


@PROPERTY_SETTINGS
@given(
    history=st.lists(events(ANONS + USERS, external=True), min_size=1, max_size=30),
    limits=st.sampled_from(LIMIT_SETS),
)
def test_graph_invariants_hold_after_every_event(history: list[Event], limits: Limits) -> None:
    graph = Graph()
    for event in history:
        res = process(graph, event, limits)
        check_graph(graph, limits)
        assert res.profile_id in graph.members
        # every identifier of the event ends up in the event's profile, or its refusal is
        # on record (an alias counts as joined when the id it names is in the profile)
        refused = {r.identifier for r in res.refusals}
        for identifier in identifiers_of(event):
            if identifier in refused:
                continue
            if identifier.type == ALIAS:
                places = {
                    graph.owner.get(Identifier(t, identifier.value))
                    for t in (ALIAS, ANONYMOUS_ID, USER_ID)
                }
                assert res.profile_id in places, identifier
            else:
                assert graph.where(identifier.value) == res.profile_id or (
                    graph.owner.get(identifier) == res.profile_id
                ), identifier
        # a refusal names an identifier of the event and leaves it where it was
        for refusal in res.refusals:
            assert refusal.identifier in identifiers_of(event)
            assert refusal.reason
            if refusal.other_profile is None:
                assert refusal.identifier not in graph.owner


@PROPERTY_SETTINGS
@given(
    history=st.lists(events(ANONS + USERS), min_size=1, max_size=30),
    limits=st.sampled_from(LIMIT_SETS),
)
def test_an_event_carrying_a_user_id_never_lands_on_another_users_profile(
    history: list[Event], limits: Limits
) -> None:
    graph = Graph()
    for event in history:
        res = process(graph, event, limits)
        if event.user_id is not None:
            assert graph.user_ids(res.profile_id) <= {event.user_id}, (
                f"an event of {event.user_id} was applied to the profile of "
                f"{graph.user_ids(res.profile_id)}"
            )


@PROPERTY_SETTINGS
@given(
    history=st.lists(events(ANONS + USERS), min_size=1, max_size=25),
    limits=st.sampled_from(LIMIT_SETS),
)
def test_replaying_an_event_changes_nothing(history: list[Event], limits: Limits) -> None:
    graph = Graph()
    for event in history:
        first = process(graph, event, limits)
        again = process(graph, event, limits)
        assert again.profile_id == first.profile_id
        assert (again.created, again.links, again.merges) == (False, [], [])


@PROPERTY_SETTINGS
@given(
    history=st.lists(
        # many users, few devices: logins with a new user id on a known device are common
        events(ANONS[:3], users=[f"n{i}" for i in range(12)], anons=ANONS[:3]),
        min_size=1,
        max_size=30,
    )
)
def test_anonymous_history_joins_the_new_user_who_logs_in_with_it(history: list[Event]) -> None:
    """(d) an anonymous id first seen alone, later seen with a new user id, ends up in that
    user's profile, unless its profile already belonged to another user."""
    limits = Limits({"anonymous_id": 100, "email": 10, "user_id": 1}, default=100)
    graph = Graph()
    first_alone: set[str] = set()
    seen: set[str] = set()
    expected: list[tuple[str, str]] = []
    for event in history:
        carried = [i.value for i in identifiers_of(event) if i.type in (ANONYMOUS_ID, ALIAS)]
        for anon in carried:
            if anon not in seen and event.user_id is None:
                first_alone.add(anon)
        new_user = event.user_id is not None and uid(event.user_id) not in graph.owner
        candidates = [
            a
            for a in carried
            if new_user
            and a in first_alone
            and (place := graph.where(a)) is not None
            and not graph.user_ids(place)
        ]
        seen.update(carried)
        process(graph, event, limits)
        for anon in candidates:
            assert event.user_id is not None
            assert graph.where(anon) == graph.owner[uid(event.user_id)], (anon, event)
            expected.append((anon, event.user_id))
    # merges only ever move whole profiles: once together, always together
    for anon, user in expected:
        assert graph.where(anon) == graph.owner[uid(user)]


@PROPERTY_SETTINGS
@given(
    before=st.lists(events(ANONS + USERS), max_size=15),
    between=st.lists(events(ANONS + USERS, anons=[*ANONS, "fresh"]), max_size=15),
    login=st.sampled_from(["identify", "track", "alias"]),
    email=_maybe(st.sampled_from(EMAILS)),
)
def test_login_with_a_new_user_id_takes_the_anonymous_history_along(
    before: list[Event], between: list[Event], login: str, email: str | None
) -> None:
    """(d), directed: whatever else happened, the device's history joins the newcomer unless
    another user had already claimed that device's profile."""
    graph = Graph()
    for event in before:
        process(graph, event)
    process(graph, ev(anon="fresh"))
    for event in between:
        process(graph, event)
    place = graph.where("fresh")
    assert place is not None
    claimed = graph.user_ids(place)
    if login == "alias":
        process(graph, ev("alias", user="newcomer", previous="fresh"))
    else:
        process(graph, ev(login, user="newcomer", anon="fresh", email=email))
    if claimed:
        assert graph.where("fresh") == place
        assert graph.owner[uid("newcomer")] != place
    else:
        assert graph.where("fresh") == graph.owner[uid("newcomer")]
