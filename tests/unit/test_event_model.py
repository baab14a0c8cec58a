"""The stored event (encode/decode, retries recognised by ``same_call``) and its partition key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from relevo.events.keys import anonymous_key, partition_of, profile_key, user_key
from relevo.events.model import Event, decode_event, encode_event, same_call

AT = datetime(2026, 11, 24, tzinfo=UTC)


def event(**fields: object) -> Event:
    base: dict[str, object] = {
        "type": "track",
        "message_id": "m-1",
        "source": "web",
        "received_at": AT,
        "timestamp": AT,
        "event": "Product Viewed",
        "user_id": "user-1",
    }
    base.update(fields)
    return Event(**base)  # type: ignore[arg-type]


class TestEncoding:
    def test_round_trip(self) -> None:
        full = event(
            original_timestamp=AT - timedelta(seconds=1),
            sent_at=AT,
            anonymous_id="a-1",
            properties={"price": 9.99, "tags": ["a"], "nested": {"x": None}},
            traits={"plan": "pro"},
            context={"ip": "1.2.3.4"},
            integrations={"All": True},
            channel="server",
            message_id_minted=True,
        )
        assert decode_event(encode_event(full)) == full

    def test_wire_names_are_the_segment_names(self) -> None:
        data = json.loads(encode_event(event(anonymous_id="a", original_timestamp=AT)))
        assert {"messageId", "userId", "anonymousId", "receivedAt", "originalTimestamp"} <= set(
            data
        )
        assert "message_id" not in data

    def test_defaults_are_left_out(self) -> None:
        data = json.loads(encode_event(event()))
        for absent in ("anonymousId", "previousId", "properties", "messageIdMinted", "sentAt"):
            assert absent not in data

    def test_unknown_types_do_not_decode(self) -> None:
        payload = encode_event(event()).replace(b'"track"', b'"purchase"')
        with pytest.raises(msgspec.ValidationError):
            decode_event(payload)


class TestSameCall:
    def test_identical_payloads(self) -> None:
        payload = encode_event(event())
        assert same_call(payload, payload)

    def test_a_retry_differs_only_in_what_the_collector_added(self) -> None:
        first = event(original_timestamp=AT, sent_at=AT, timestamp=AT)
        retry = event(
            original_timestamp=AT,
            sent_at=AT + timedelta(seconds=30),
            received_at=AT + timedelta(seconds=31),
            timestamp=AT + timedelta(seconds=1),
        )
        assert same_call(encode_event(first), encode_event(retry))

    @pytest.mark.parametrize(
        "change",
        [
            {"properties": {"price": 1}},
            {"event": "Other"},
            {"user_id": "user-2"},
            {"original_timestamp": AT - timedelta(days=1)},
            {"message_id": "m-2"},
            {"traits": {"plan": "free"}},
        ],
    )
    def test_a_different_call_with_the_same_id_is_not_a_retry(
        self, change: dict[str, object]
    ) -> None:
        first = event(original_timestamp=AT)
        second = event(**{"original_timestamp": AT, **change})
        assert not same_call(encode_event(first), encode_event(second))


class TestProfileKey:
    def test_user_id_decides_then_anonymous_id(self) -> None:
        assert profile_key(event(user_id="u-1", anonymous_id="a-1")) == "u:u-1"
        assert profile_key(event(user_id=None, anonymous_id="a-1")) == "a:a-1"

    def test_user_and_anonymous_ids_with_the_same_text_do_not_collide(self) -> None:
        assert user_key("x") != anonymous_key("x")
        assert profile_key(event(user_id="x")) != profile_key(event(user_id=None, anonymous_id="x"))

    def test_partitions_are_stable_across_processes_and_releases(self) -> None:
        # CRC-32, not hash(): these literal values must never change, or a restart would send
        # a profile's events to another partition and break their order
        assert partition_of("u:user-1", 16) == 6
        assert partition_of("a:anon-456", 16) == 10
        assert partition_of("u:x", 16) == 14
        assert partition_of("a:x", 16) == 2

    def test_partitions_are_in_range(self) -> None:
        for n in (1, 3, 8, 64):
            assert {partition_of(f"u:{i}", n) for i in range(500)} == set(range(n))
