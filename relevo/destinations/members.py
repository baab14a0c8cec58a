"""A profile as an ad-audience member: its emails (identities) and phone (trait)."""

from __future__ import annotations

from relevo.channels.audiences import Member
from relevo.profiles.identifiers import EMAIL
from relevo.store.base import Store


def audience_member(store: Store, profile_id: str) -> Member:
    identifiers = store.identifiers(profile_id)
    profile = store.find(profile_id)
    phone = profile.traits.get("phone") if profile else None
    return Member(
        profile_id,
        emails=tuple(i.value for i in identifiers if i.type == EMAIL),
        phones=(str(phone.value),) if phone is not None and phone.value else (),
    )
