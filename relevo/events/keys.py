"""The stable profile key that partitions the event log.

``userId`` when the call has one, else ``anonymousId``: a customer's known-user events then share
one partition across devices, and each anonymous visitor's events keep their order. Typed
(``u:``/``a:``) so a user id and an anonymous id with the same text never collide.
"""

from __future__ import annotations

import zlib

from relevo.events.model import Event


def user_key(user_id: str) -> str:
    return f"u:{user_id}"


def anonymous_key(anonymous_id: str) -> str:
    return f"a:{anonymous_id}"


def profile_key(event: Event) -> str:
    if event.user_id is not None:
        return user_key(event.user_id)
    return anonymous_key(str(event.anonymous_id))


def partition_of(key: str, partitions: int) -> int:
    """A stable partition for a key: CRC-32 is the same in every process and release."""
    return zlib.crc32(key.encode()) % partitions
