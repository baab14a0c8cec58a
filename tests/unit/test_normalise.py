"""Validation and normalisation of tracking calls, with the shapes the official SDKs send.

The payloads below are copied from ``reference/tracking-clients.md`` (captured from the real
libraries); every rejection must name its field, ``batch[3].userId`` style.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from relevo.errors import ErrorDetail
from relevo.events.model import Event, decode_event, encode_event
from relevo.events.normalise import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    BatchDefaults,
    EventRejected,
    Limits,
    decode_wire_event,
    normalise,
)
from relevo.events.timestamps import parse_timestamp
from relevo.events.wire import WireBatch

LIMITS = Limits(max_event_bytes=32 * 1024, max_nesting_depth=32)
RECEIVED = datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC)
WHERE = "batch[3]"


def _raw(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def norm(
    payload: dict[str, Any] | bytes,
    *,
    where: str = WHERE,
    received_at: datetime = RECEIVED,
    implied_type: str | None = None,
    defaults: BatchDefaults | None = None,
    limits: Limits = LIMITS,
) -> Event:
    wire = decode_wire_event(_raw(payload), where, limits)
    return normalise(
        wire,
        where=where,
        source="web",
        received_at=received_at,
        limits=limits,
        implied_type=implied_type,
        defaults=defaults or BatchDefaults(),
    )


def rejected(payload: dict[str, Any] | bytes, **kwargs: Any) -> list[ErrorDetail]:
    with pytest.raises(EventRejected) as info:
        norm(payload, **kwargs)
    details = info.value.details
    assert details, "a rejection must say why"
    for detail in details:
        assert detail.message.strip(), detail
        assert detail.code, detail
    return details


def only(details: list[ErrorDetail]) -> ErrorDetail:
    assert len(details) == 1, details
    return details[0]


def normalise_batch(body: bytes, received_at: datetime) -> list[Event]:
    """What the collector does with a /v1/batch body (decode the envelope, then each event)."""
    batch = msgspec.json.decode(body, type=WireBatch)
    sent_at = parse_timestamp(batch.sent_at) if batch.sent_at else None
    defaults = BatchDefaults(sent_at, batch.context, batch.integrations)
    return [
        norm(bytes(raw), where=f"batch[{i}]", received_at=received_at, defaults=defaults)
        for i, raw in enumerate(batch.batch)
    ]


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "userId": "user-1", **fields}


# -- what the SDKs send --------------------------------------------------------------------------

LIBRARY = {"name": "analytics-python", "version": "2.4.0"}
SEGMENT_PYTHON_BATCH = {
    "batch": [
        {
            "integrations": {},
            "anonymousId": None,
            "timestamp": "2026-11-23T23:59:58.807+00:00",
            "context": {"ip": "1.2.3.4", "library": LIBRARY},
            "type": "identify",
            "userId": "user-1",
            "traits": {"email": "a@example.com", "plan": "pro"},
            "messageId": "2c4e3f79-e9b2-42ae-93c5-178ab5457cf8",
        },
        {
            "integrations": {"All": True},
            "anonymousId": None,
            "properties": {"product_id": "sku-1", "price": 9.99},
            "timestamp": "2025-01-02T03:04:05.000+00:00",
            "context": {"library": LIBRARY},
            "userId": "user-1",
            "type": "track",
            "event": "Product Viewed",
            "messageId": "fixed-msg-id-1",
        },
        {
            "integrations": {},
            "anonymousId": None,
            "timestamp": "2026-11-23T23:59:58.810+00:00",
            "context": {"library": LIBRARY},
            "type": "page",
            "userId": "user-1",
            "category": "Docs",
            "name": "Install",
            "properties": {"url": "http://x/docs"},
            "messageId": "m-page",
        },
        {
            "integrations": {},
            "anonymousId": None,
            "timestamp": "2026-11-23T23:59:58.811+00:00",
            "context": {"library": LIBRARY},
            "type": "screen",
            "userId": "user-1",
            "category": "App",
            "name": "Home",
            "properties": {},
            "messageId": "m-screen",
        },
        {
            "integrations": {},
            "anonymousId": None,
            "timestamp": "2026-11-23T23:59:58.812+00:00",
            "context": {"library": LIBRARY},
            "type": "group",
            "userId": "user-1",
            "groupId": "group-9",
            "traits": {"name": "Acme"},
            "messageId": "m-group",
        },
        {
            "integrations": {},
            "anonymousId": None,
            "timestamp": "2026-11-23T23:59:58.813+00:00",
            "context": {"library": LIBRARY},
            "type": "alias",
            "previousId": "anon-123",
            "userId": "user-1",
            "messageId": "m-alias",
        },
        {
            "integrations": {},
            "anonymousId": "anon-456",
            "userId": None,
            "timestamp": "2026-11-23T23:59:58.814+00:00",
            "context": {"library": LIBRARY},
            "type": "track",
            "event": "Signed Up",
            "properties": {},
            "messageId": "m-signup",
        },
    ],
    "sentAt": "2026-11-23T23:59:59.307985+00:00",
    "writeKey": "WK_segment_py",
}

RUDDER_PYTHON_BATCH = {
    "batch": [
        {
            "integrations": {"All": True},
            "anonymousId": None,
            "timestamp": "2026-11-24T00:00:20.556394+00:00",
            "context": {
                "traits": {"email": "a@example.com"},
                "library": {"name": "analytics-python", "version": "2.1.9"},
            },
            "type": "identify",
            "userId": "user-1",
            "messageId": "c2141473-0000-4000-8000-000000000000",
            "channel": "server",
        },
        {
            "integrations": {"All": True},
            "anonymousId": None,
            "timestamp": "2026-11-24T00:00:20.556500+00:00",
            "context": {"library": {"name": "analytics-python", "version": "2.1.9"}},
            "type": "track",
            "userId": "user-1",
            "event": "Product Viewed",
            "properties": {"product_id": "sku-1"},
            "messageId": "c2141473-0000-4000-8000-000000000001",
            "channel": "server",
        },
    ],
    "sentAt": "2026-11-24T00:00:21.056676+00:00",
}

ANALYTICS_NEXT_TRACK = {
    "timestamp": "2026-11-24T00:01:19.206Z",
    "integrations": {"Segment.io": True},
    "event": "Product Viewed",
    "type": "track",
    "properties": {"product_id": "sku-1", "price": 9.99},
    "context": {
        "page": {
            "path": "/seg-npm.html",
            "referrer": "",
            "search": "",
            "title": "loading",
            "url": "http://127.0.0.1:8765/seg-npm.html",
        },
        "userAgent": "Mozilla/5.0 HeadlessChrome/156.0.0.0",
        "userAgentData": {"brands": [], "mobile": False, "platform": "Linux"},
        "locale": "en-US",
        "library": {"name": "analytics.js", "version": "npm:next-1.84.3"},
        "timezone": "UTC",
    },
    "messageId": "ajs-next-1795478479206-352ca518-7006-48ad-a1ba-13d1e5cea45a",
    "userId": "user-1",
    "anonymousId": "134b352c-a518-4006-98ad-61ba13d1e5ce",
    "writeKey": "WK_browser",
    "sentAt": "2026-11-24T00:01:19.220Z",
    "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
}

RUDDER_JS_IDENTIFY = {
    "userId": "user-1",
    "type": "identify",
    "channel": "web",
    "context": {
        "traits": {"email": "a@example.com", "plan": "pro"},
        "sessionId": 1795478524228,
        "sessionStart": True,
        "library": {"name": "RudderLabs JavaScript SDK", "version": "3.34.1"},
        "locale": "en-US",
        "timezone": "GMT+0000",
    },
    "originalTimestamp": "2026-11-24T00:02:04.228Z",
    "sentAt": "2026-11-24T00:02:04.228Z",
    "messageId": "0ef3b9ee-c821-4d6c-bf2f-ddfe086b399f",
    "anonymousId": "9195479c-55ec-4190-8022-8774f5fb5e5f",
    "integrations": {"All": True},
}


class TestSegmentPythonBatch:
    SENT = datetime(2026, 11, 23, 23, 59, 59, 307985, tzinfo=UTC)
    LATENCY = timedelta(milliseconds=500)

    @pytest.fixture
    def events(self) -> list[Event]:
        body = json.dumps(SEGMENT_PYTHON_BATCH).encode()
        return normalise_batch(body, received_at=self.SENT + self.LATENCY)

    def test_every_call_is_accepted_with_its_type(self, events: list[Event]) -> None:
        assert [e.type for e in events] == [
            "identify",
            "track",
            "page",
            "screen",
            "group",
            "alias",
            "track",
        ]

    def test_null_ids_are_missing_ids(self, events: list[Event]) -> None:
        identify, *_, signup = events
        assert identify.user_id == "user-1"
        assert identify.anonymous_id is None
        assert signup.user_id is None
        assert signup.anonymous_id == "anon-456"
        assert b"anonymousId" not in encode_event(identify)

    def test_fields_of_each_call_are_kept(self, events: list[Event]) -> None:
        identify, product, page, screen, group, alias, signup = events
        assert identify.traits == {"email": "a@example.com", "plan": "pro"}
        assert identify.context == {"ip": "1.2.3.4", "library": LIBRARY}
        assert product.event == "Product Viewed"
        assert product.properties == {"product_id": "sku-1", "price": 9.99}
        assert product.integrations == {"All": True}
        assert (page.category, page.name, page.properties) == (
            "Docs",
            "Install",
            {"url": "http://x/docs"},
        )
        assert (screen.category, screen.name) == ("App", "Home")
        assert (group.group_id, group.traits) == ("group-9", {"name": "Acme"})
        assert (alias.previous_id, alias.user_id) == ("anon-123", "user-1")
        assert signup.event == "Signed Up"

    def test_client_message_ids_are_kept_and_not_flagged(self, events: list[Event]) -> None:
        assert events[1].message_id == "fixed-msg-id-1"
        assert events[0].message_id == "2c4e3f79-e9b2-42ae-93c5-178ab5457cf8"
        assert not any(e.message_id_minted for e in events)

    def test_batch_sent_at_corrects_every_event(self, events: list[Event]) -> None:
        identify = events[0]
        original = datetime(2026, 11, 23, 23, 59, 58, 807000, tzinfo=UTC)
        assert identify.original_timestamp == original
        assert identify.sent_at == self.SENT
        assert identify.received_at == self.SENT + self.LATENCY
        # timestamp = receivedAt - (sentAt - originalTimestamp): the device clock was right,
        # so the event keeps its time shifted by the network latency only
        assert identify.timestamp == original + self.LATENCY

    def test_a_historical_timestamp_keeps_its_distance_from_sent_at(
        self, events: list[Event]
    ) -> None:
        product = events[1]
        assert product.original_timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert product.timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) + self.LATENCY

    def test_the_write_key_is_not_stored_with_the_event(self, events: list[Event]) -> None:
        for event in events:
            assert b"WK_segment_py" not in encode_event(event)

    def test_stored_events_round_trip(self, events: list[Event]) -> None:
        for event in events:
            assert decode_event(encode_event(event)) == event


def test_old_analytics_python_microsecond_timestamps_without_write_key() -> None:
    body = {
        "batch": [
            {
                "type": "track",
                "event": "Signed Up",
                "userId": "user-1",
                "anonymousId": None,
                "timestamp": "2026-11-23T23:59:58.807123+00:00",
                "messageId": "m1",
            }
        ],
        "sentAt": "2026-11-23T23:59:59.000000+00:00",
    }
    sent = datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC)
    (event,) = normalise_batch(json.dumps(body).encode(), received_at=sent)
    assert event.original_timestamp == datetime(2026, 11, 23, 23, 59, 58, 807123, tzinfo=UTC)
    assert event.timestamp == event.original_timestamp


class TestRudderStack:
    def test_python_identify_traits_come_from_context_traits(self) -> None:
        sent = datetime(2026, 11, 24, 0, 0, 21, 56676, tzinfo=UTC)
        identify, product = normalise_batch(json.dumps(RUDDER_PYTHON_BATCH).encode(), sent)
        assert identify.traits == {"email": "a@example.com"}
        assert identify.channel == "server"
        assert identify.original_timestamp == datetime(2026, 11, 24, 0, 0, 20, 556394, tzinfo=UTC)
        assert identify.timestamp == identify.original_timestamp
        assert product.traits == {}
        assert product.properties == {"product_id": "sku-1"}

    def test_js_original_timestamp_is_the_client_time(self) -> None:
        received = datetime(2026, 11, 24, 0, 2, 5, tzinfo=UTC)
        event = norm(RUDDER_JS_IDENTIFY, where="", implied_type="identify", received_at=received)
        assert event.original_timestamp == datetime(2026, 11, 24, 0, 2, 4, 228000, tzinfo=UTC)
        # sentAt == originalTimestamp: the call was sent at once, so it happened at receipt
        assert event.timestamp == received
        assert event.traits == {"email": "a@example.com", "plan": "pro"}
        assert event.anonymous_id == "9195479c-55ec-4190-8022-8774f5fb5e5f"
        assert event.channel == "web"

    def test_timestamp_wins_over_original_timestamp(self) -> None:
        event = norm(
            track(timestamp="2026-01-01T00:00:00Z", originalTimestamp="2020-01-01T00:00:00Z")
        )
        assert event.original_timestamp == datetime(2026, 1, 1, tzinfo=UTC)

    def test_top_level_traits_win_over_context_traits(self) -> None:
        event = norm(
            {
                "type": "identify",
                "userId": "u",
                "traits": {"plan": "pro"},
                "context": {"traits": {"plan": "free", "email": "a@example.com"}},
            }
        )
        assert event.traits == {"plan": "pro", "email": "a@example.com"}

    def test_context_traits_only_become_traits_on_identify(self) -> None:
        event = norm(track(context={"traits": {"plan": "pro"}}))
        assert event.traits == {}
        assert event.context == {"traits": {"plan": "pro"}}

    def test_non_object_context_traits_are_ignored(self) -> None:
        event = norm({"type": "identify", "userId": "u", "context": {"traits": 5}})
        assert event.traits == {}


class TestAnalyticsNext:
    def test_single_track_with_write_key_and_metadata_in_body(self) -> None:
        received = datetime(2026, 11, 24, 0, 1, 19, 300000, tzinfo=UTC)
        event = norm(ANALYTICS_NEXT_TRACK, where="", implied_type="track", received_at=received)
        assert event.type == "track"
        assert event.event == "Product Viewed"
        assert event.user_id == "user-1"
        assert event.message_id.startswith("ajs-next-")
        assert event.original_timestamp == datetime(2026, 11, 24, 0, 1, 19, 206000, tzinfo=UTC)
        assert event.sent_at == datetime(2026, 11, 24, 0, 1, 19, 220000, tzinfo=UTC)
        assert event.timestamp == received - timedelta(milliseconds=14)
        assert event.context["locale"] == "en-US"
        stored = encode_event(event)
        assert b"WK_browser" not in stored
        assert b"_metadata" not in stored

    def test_single_call_without_type_takes_the_endpoint_type(self) -> None:
        payload = {k: v for k, v in ANALYTICS_NEXT_TRACK.items() if k != "type"}
        assert norm(payload, where="", implied_type="track").type == "track"

    def test_self_alias_is_accepted(self) -> None:
        event = norm(
            {"type": "alias", "userId": "user-1", "previousId": "user-1", "anonymousId": "a-1"},
            where="",
            implied_type="alias",
        )
        assert (event.user_id, event.previous_id) == ("user-1", "user-1")


# -- ids ------------------------------------------------------------------------------------------


class TestIds:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(123, "123"), (0, "0"), (-5, "-5"), (2**70, str(2**70)), ("u-1", "u-1")],
    )
    def test_numbers_are_kept_as_strings(self, value: object, expected: str) -> None:
        event = norm(track(userId=value, anonymousId=value, messageId=value))
        assert event.user_id == expected
        assert event.anonymous_id == expected
        assert event.message_id == expected

    def test_group_and_previous_ids_may_be_numbers(self) -> None:
        assert norm({"type": "group", "userId": "u", "groupId": 9}).group_id == "9"
        assert norm({"type": "alias", "userId": "u", "previousId": 7}).previous_id == "7"

    @pytest.mark.parametrize("missing", [None, "", "absent"])
    def test_null_empty_and_absent_ids_are_all_missing(self, missing: object) -> None:
        payload = track(anonymousId="a-1")
        if missing == "absent":
            del payload["userId"]
        else:
            payload["userId"] = missing
        event = norm(payload)
        assert event.user_id is None
        assert event.anonymous_id == "a-1"

    @pytest.mark.parametrize("value", [True, False, 1.5, [], {}])
    @pytest.mark.parametrize("field", ["userId", "anonymousId", "messageId", "previousId"])
    def test_ids_of_other_types_are_rejected_naming_the_field(
        self, field: str, value: object
    ) -> None:
        detail = only(rejected(track(**{field: value})))
        assert detail.location == f"{WHERE}.{field}"
        assert detail.code == "invalid_type"

    def test_too_long_ids_are_rejected(self) -> None:
        assert norm(track(userId="u" * MAX_ID_LENGTH)).user_id == "u" * MAX_ID_LENGTH
        detail = only(rejected(track(userId="u" * (MAX_ID_LENGTH + 1))))
        assert (detail.location, detail.code) == (f"{WHERE}.userId", "too_long")
        assert str(MAX_ID_LENGTH) in detail.message

    @pytest.mark.parametrize("blank", [None, ""])
    def test_user_id_or_anonymous_id_is_required(self, blank: str | None) -> None:
        detail = only(rejected(track(userId=blank, anonymousId=blank)))
        assert detail.location == f"{WHERE}.userId"
        assert detail.code == "missing"
        assert "anonymousId" in detail.message

    def test_either_id_alone_is_enough(self) -> None:
        assert norm(track(userId="u")).anonymous_id is None
        assert norm(track(userId=None, anonymousId="a")).user_id is None

    def test_alias_needs_user_id_and_previous_id(self) -> None:
        details = rejected({"type": "alias", "anonymousId": "a-1"})
        assert {(d.location, d.code) for d in details} == {
            (f"{WHERE}.userId", "missing"),
            (f"{WHERE}.previousId", "missing"),
        }
        assert all("alias" in d.message for d in details)

    def test_alias_needs_no_anonymous_id(self) -> None:
        event = norm({"type": "alias", "userId": "u", "previousId": "a", "anonymousId": None})
        assert event.anonymous_id is None

    def test_message_id_is_minted_and_flagged_when_missing(self) -> None:
        first = norm(track())
        second = norm(track(messageId=""))
        assert first.message_id_minted and second.message_id_minted
        assert first.message_id.startswith("relevo-")
        assert first.message_id != second.message_id
        assert b'"messageIdMinted":true' in encode_event(first)

    def test_client_message_id_is_not_flagged(self) -> None:
        event = norm(track(messageId="m-1"))
        assert (event.message_id, event.message_id_minted) == ("m-1", False)
        assert b"messageIdMinted" not in encode_event(event)


# -- per-type rules --------------------------------------------------------------------------------


class TestTypes:
    @pytest.mark.parametrize("event", [None, "", "absent"])
    def test_track_needs_an_event_name(self, event: str | None) -> None:
        payload = track(event=event)
        if event == "absent":
            del payload["event"]
        detail = only(rejected(payload))
        assert (detail.location, detail.code) == (f"{WHERE}.event", "missing")
        assert "track" in detail.message

    def test_group_needs_a_group_id(self) -> None:
        detail = only(rejected({"type": "group", "userId": "u", "traits": {"name": "Acme"}}))
        assert (detail.location, detail.code) == (f"{WHERE}.groupId", "missing")

    def test_identify_page_and_screen_need_only_an_id(self) -> None:
        for kind in ("identify", "page", "screen"):
            assert norm({"type": kind, "anonymousId": "a"}).type == kind

    def test_type_is_required_in_a_batch(self) -> None:
        detail = only(rejected({"userId": "u"}))
        assert (detail.location, detail.code) == (f"{WHERE}.type", "missing")

    def test_unknown_type_is_rejected(self) -> None:
        detail = only(rejected({"type": "purchase", "userId": "u"}))
        assert detail.location == f"{WHERE}.type"
        assert "'purchase'" in detail.message
        assert "track" in detail.message

    def test_type_contradicting_the_endpoint_is_rejected(self) -> None:
        detail = only(rejected(track(), where="", implied_type="identify"))
        assert detail.location == "type"
        assert "'track'" in detail.message and "'identify'" in detail.message

    def test_single_event_locations_have_no_batch_prefix(self) -> None:
        detail = only(rejected(track(userId=None), where=""))
        assert detail.location == "userId"

    @pytest.mark.parametrize("field", ["event", "name", "category"])
    def test_overlong_names_are_rejected(self, field: str) -> None:
        assert norm(track(**{field: "x" * MAX_NAME_LENGTH}))
        detail = only(rejected(track(**{field: "x" * (MAX_NAME_LENGTH + 1)})))
        assert (detail.location, detail.code) == (f"{WHERE}.{field}", "too_long")

    def test_every_problem_of_an_event_is_reported_at_once(self) -> None:
        details = rejected(
            {"type": "track", "userId": None, "timestamp": "yesterday", "sentAt": "soon"}
        )
        assert {d.location for d in details} == {
            f"{WHERE}.userId",
            f"{WHERE}.event",
            f"{WHERE}.timestamp",
            f"{WHERE}.sentAt",
        }

    def test_the_exception_text_names_each_location(self) -> None:
        with pytest.raises(EventRejected) as info:
            norm(track(event=None, userId=None))
        assert f"{WHERE}.event" in str(info.value)
        assert f"{WHERE}.userId" in str(info.value)


# -- timestamps ---------------------------------------------------------------------------------


class TestTimestamps:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-24T00:01:19.206Z", datetime(2026, 11, 24, 0, 1, 19, 206000, tzinfo=UTC)),
            (
                "2026-11-24T00:01:19.206+00:00",
                datetime(2026, 11, 24, 0, 1, 19, 206000, tzinfo=UTC),
            ),
            (
                "2026-11-24T00:01:19.307985+00:00",
                datetime(2026, 11, 24, 0, 1, 19, 307985, tzinfo=UTC),
            ),
            ("2026-11-24T02:01:19+02:00", datetime(2026, 11, 24, 0, 1, 19, tzinfo=UTC)),
            ("2026-11-23T19:01:19-05:00", datetime(2026, 11, 24, 0, 1, 19, tzinfo=UTC)),
            ("2026-11-24T00:01:19", datetime(2026, 11, 24, 0, 1, 19, tzinfo=UTC)),
        ],
    )
    def test_iso_variants_parse_to_aware_utc(self, text: str, expected: datetime) -> None:
        parsed = parse_timestamp(text)
        assert parsed == expected
        assert parsed.utcoffset() == timedelta(0)
        event = norm(track(timestamp=text))
        assert event.original_timestamp == expected
        assert event.timestamp == expected  # no sentAt: nothing to correct

    @pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00Z", "1732406479"])
    def test_unparseable_timestamps_are_rejected(self, text: str) -> None:
        detail = only(rejected(track(timestamp=text)))
        assert (detail.location, detail.code) == (f"{WHERE}.timestamp", "invalid_timestamp")
        assert "ISO-8601" in detail.message
        assert repr(text) in detail.message

    def test_a_bad_original_timestamp_is_named_as_such(self) -> None:
        detail = only(rejected(track(originalTimestamp="nope")))
        assert detail.location == f"{WHERE}.originalTimestamp"

    def test_a_bad_sent_at_is_rejected(self) -> None:
        detail = only(rejected(track(timestamp="2026-11-24T00:00:00Z", sentAt="nope")))
        assert (detail.location, detail.code) == (f"{WHERE}.sentAt", "invalid_timestamp")

    def test_a_numeric_timestamp_is_a_type_error_at_its_field(self) -> None:
        detail = only(rejected(track(timestamp=1732406479)))
        assert (detail.location, detail.code) == (f"{WHERE}.timestamp", "invalid_type")

    def test_long_garbage_is_truncated_in_the_message(self) -> None:
        detail = only(rejected(track(timestamp="x" * 5000)))
        assert len(detail.message) < 200

    def test_no_client_time_means_received_time(self) -> None:
        event = norm(track(sentAt="2026-11-24T00:00:00Z"))
        assert event.timestamp == RECEIVED
        assert event.original_timestamp is None

    def test_clock_skew_is_corrected_with_sent_at(self) -> None:
        # the device clock is an hour fast: it stamped the call at 01:00:00 and sent it at
        # 01:00:02; it arrived at 00:00:02.5 server time
        received = datetime(2026, 11, 24, 0, 0, 2, 500000, tzinfo=UTC)
        event = norm(
            track(timestamp="2026-11-24T01:00:00Z", sentAt="2026-11-24T01:00:02Z"),
            received_at=received,
        )
        assert event.timestamp == datetime(2026, 11, 24, 0, 0, 0, 500000, tzinfo=UTC)
        assert event.original_timestamp == datetime(2026, 11, 24, 1, tzinfo=UTC)
        assert event.sent_at == datetime(2026, 11, 24, 1, 0, 2, tzinfo=UTC)
        assert event.received_at == received

    def test_event_sent_at_wins_over_the_batch_sent_at(self) -> None:
        defaults = BatchDefaults(sent_at=datetime(2026, 11, 24, 0, 0, 10, tzinfo=UTC))
        own = norm(
            track(timestamp="2026-11-24T00:00:00Z", sentAt="2026-11-24T00:00:01Z"),
            defaults=defaults,
        )
        assert own.timestamp == RECEIVED - timedelta(seconds=1)
        lent = norm(track(timestamp="2026-11-24T00:00:00Z"), defaults=defaults)
        assert lent.timestamp == RECEIVED - timedelta(seconds=10)
        assert lent.sent_at == defaults.sent_at

    @pytest.mark.parametrize(
        ("timestamp", "sent_at"),
        [
            ("9999-12-31T23:59:59-01:00", None),  # past datetime.max once in UTC
            ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),
            ("9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z"),
        ],
    )
    def test_out_of_range_times_are_rejected_not_crashed_on(
        self, timestamp: str, sent_at: str | None
    ) -> None:
        payload = track(timestamp=timestamp)
        if sent_at:
            payload["sentAt"] = sent_at
        detail = only(rejected(payload))
        assert detail.location == f"{WHERE}.timestamp"


# -- batch defaults ---------------------------------------------------------------------------


class TestBatchDefaults:
    def test_batch_context_is_lent_and_the_event_wins_per_key(self) -> None:
        defaults = BatchDefaults(
            context={"library": {"name": "batch"}, "ip": "1.1.1.1"},
            integrations={"All": False, "Mixpanel": True},
        )
        event = norm(
            track(context={"ip": "2.2.2.2"}, integrations={"All": True}), defaults=defaults
        )
        assert event.context == {"library": {"name": "batch"}, "ip": "2.2.2.2"}
        assert event.integrations == {"All": True, "Mixpanel": True}

    def test_an_event_without_context_gets_a_copy_of_the_batch_context(self) -> None:
        shared = {"ip": "1.1.1.1"}
        defaults = BatchDefaults(context=shared)
        first = norm(track(), defaults=defaults)
        first.context["ip"] = "changed"
        assert shared == {"ip": "1.1.1.1"}
        assert norm(track(), defaults=defaults).context == {"ip": "1.1.1.1"}

    def test_a_deep_batch_context_does_not_bypass_the_nesting_limit(self) -> None:
        deep: Any = []
        for _ in range(100):
            deep = [deep]
        detail = only(rejected(track(), defaults=BatchDefaults(context={"x": deep})))
        assert (detail.location, detail.code) == (f"{WHERE}.context", "too_deep")


# -- hostile input ------------------------------------------------------------------------------


def _nested(depth: int, open_: bytes = b'{"a":', close: bytes = b"}") -> bytes:
    return open_ * (depth - 1) + b"1" + close * (depth - 1) if depth > 1 else b"1"


class TestHostileInput:
    @pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan"])
    def test_nan_and_infinity_are_not_json(self, literal: bytes) -> None:
        raw = b'{"type":"track","event":"x","userId":"u","properties":{"a":' + literal + b"}}"
        detail = only(rejected(raw))
        assert (detail.location, detail.code) == (WHERE, "invalid_json")

    @pytest.mark.parametrize("number", [b"1e999", b"-1e999"])
    def test_numbers_that_overflow_to_infinity_are_rejected(self, number: bytes) -> None:
        raw = b'{"type":"track","event":"x","userId":"u","properties":{"a":' + number + b"}}"
        detail = only(rejected(raw))
        assert detail.location.startswith(f"{WHERE}.properties")

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"type":"track","event":"x","userId":"u\xff"}',
            b'{"type":"track","event":"x","userId":"u","properties":{"a":"\xc3\x28"}}',
            b'{"type":"track","event":"x","userId":"\\ud800"}',  # a lone surrogate
        ],
    )
    def test_invalid_utf8_is_rejected(self, raw: bytes) -> None:
        detail = only(rejected(raw))
        assert (detail.location, detail.code) == (WHERE, "invalid_json")

    @pytest.mark.parametrize("raw", [b"", b"{", b'{"type":', b"not json", b'{"a":1}x'])
    def test_malformed_json_is_rejected(self, raw: bytes) -> None:
        detail = only(rejected(raw))
        assert (detail.location, detail.code) == (WHERE, "invalid_json")
        assert "invalid JSON" in detail.message

    @pytest.mark.parametrize("raw", [b"[1]", b'"track"', b"null", b"42"])
    def test_an_event_must_be_an_object(self, raw: bytes) -> None:
        detail = only(rejected(raw))
        assert (detail.location, detail.code) == (WHERE, "invalid_type")

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("properties", []),
            ("properties", "x"),
            ("traits", "vip"),
            ("context", 5),
            ("integrations", [True]),
            ("type", 3),
            ("event", {"name": "x"}),
            ("sentAt", 0),
            ("channel", False),
        ],
    )
    def test_wrong_types_name_their_field(self, field: str, value: object) -> None:
        detail = only(rejected(track(**{field: value})))
        assert (detail.location, detail.code) == (f"{WHERE}.{field}", "invalid_type")
        assert "Expected" in detail.message

    def test_single_event_type_errors_are_located_too(self) -> None:
        detail = only(rejected(track(userId=True), where=""))
        assert detail.location.endswith("userId")

    def test_oversize_event_is_rejected_before_parsing(self) -> None:
        raw = _raw(track(properties={"blob": "x" * LIMITS.max_event_bytes}))
        detail = only(rejected(raw))
        assert (detail.location, detail.code) == (WHERE, "event_too_large")
        assert str(len(raw)) in detail.message
        assert str(LIMITS.max_event_bytes) in detail.message
        # not even JSON: the size is checked first
        assert only(rejected(b"x" * (LIMITS.max_event_bytes + 1))).code == "event_too_large"

    def test_an_event_exactly_at_the_limit_is_accepted(self) -> None:
        base = _raw(track(properties={"blob": ""}))
        raw = _raw(track(properties={"blob": "x" * (LIMITS.max_event_bytes - len(base))}))
        assert len(raw) == LIMITS.max_event_bytes
        assert norm(raw).properties["blob"]

    @pytest.mark.parametrize("field", ["properties", "traits", "context", "integrations"])
    def test_nesting_deeper_than_the_limit_is_rejected(self, field: str) -> None:
        def nest(levels: int) -> dict[str, Any]:
            value: dict[str, Any] = {"leaf": 1}
            for _ in range(levels - 1):
                value = {"n": value}
            return value

        kind = "identify" if field == "traits" else "track"
        assert norm(track(type=kind, **{field: nest(LIMITS.max_nesting_depth)}))
        detail = only(rejected(track(type=kind, **{field: nest(LIMITS.max_nesting_depth + 1)})))
        assert (detail.location, detail.code) == (f"{WHERE}.{field}", "too_deep")
        assert str(LIMITS.max_nesting_depth) in detail.message

    def test_lists_count_as_nesting(self) -> None:
        depth = LIMITS.max_nesting_depth
        deep = json.loads("[" * depth + "]" * depth)  # plus the properties object: one over
        detail = only(rejected(track(properties={"a": deep})))
        assert detail.code == "too_deep"

    @pytest.mark.parametrize(("open_", "close"), [(b'{"a":', b"}"), (b"[", b"]")])
    def test_ten_thousand_levels_are_rejected_cleanly(self, open_: bytes, close: bytes) -> None:
        big = Limits(max_event_bytes=10_000_000, max_nesting_depth=32)
        deep = _nested(10_000, open_, close)
        raw = b'{"type":"track","event":"x","userId":"u","properties":{"a":' + deep + b"}}"
        detail = only(rejected(raw, limits=big))
        assert detail.location == WHERE
        assert detail.code == "too_deep"

    def test_the_depth_check_itself_does_not_recurse(self) -> None:
        big = Limits(max_event_bytes=10_000_000, max_nesting_depth=32)
        wire = decode_wire_event(_raw(track()), WHERE, big)
        deep: dict[str, Any] = {}
        for _ in range(50_000):
            deep = {"a": deep}
        wire.properties = deep
        with pytest.raises(EventRejected) as info:
            normalise(wire, where=WHERE, source="web", received_at=RECEIVED, limits=big)
        assert only(info.value.details).location == f"{WHERE}.properties"

    def test_unknown_fields_are_ignored(self) -> None:
        event = norm(track(_metadata={"x": 1}, writeKey="WK", somethingNew=[1, 2]))
        assert b"somethingNew" not in encode_event(event)
