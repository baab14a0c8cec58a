"""Ad-audience hashing (P4): platform vectors, passthrough, payloads, and no plaintext out."""

from __future__ import annotations

import hashlib
import io
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from relevo.channels.audiences import (
    InvalidIdentifier,
    Member,
    MembershipChange,
    Platform,
    build_batches,
    hash_email,
    hash_member,
    hash_phone,
    is_sha256_hex,
    normalise_email,
    normalise_phone,
    sha256_hex,
    write_members_csv,
)
from relevo.errors import ValidationError

GOOGLE, META = Platform.GOOGLE, Platform.META
HEX64 = re.compile(r"[0-9a-f]{64}")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- vectors -------------------------------------------------------------------------------


def test_meta_documented_vectors() -> None:
    # Meta's customer-information parameters page: input, normalised form and SHA-256
    assert normalise_email("John_Smith@gmail.com", META) == "john_smith@gmail.com"
    assert hash_email("John_Smith@gmail.com", META) == (
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert normalise_phone("(650)555-1212", META, default_region="US") == "16505551212"
    assert hash_phone("(650)555-1212", META, default_region="US") == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )


@pytest.mark.parametrize(
    ("raw", "region", "google", "meta"),
    [
        ("+14155550123", None, "+14155550123", "14155550123"),
        ("+1 (415) 555-0123", None, "+14155550123", "14155550123"),
        ("415.555.0123", "US", "+14155550123", "14155550123"),
        ("+44 20 7946 0958", None, "+442079460958", "442079460958"),
        ("020 7946 0958", "GB", "+442079460958", "442079460958"),  # national 0 dropped
        ("00 44 20 7946 0958", "DE", "+442079460958", "442079460958"),  # 00 prefix
        ("+49 30 1234567", None, "+49301234567", "49301234567"),
        (" +33 6 12 34 56 78 ", None, "+33612345678", "33612345678"),
    ],
)
def test_phones_are_e164_with_plus_for_google_and_digits_for_meta(
    raw: str, region: str | None, google: str, meta: str
) -> None:
    assert normalise_phone(raw, GOOGLE, default_region=region) == google
    assert normalise_phone(raw, META, default_region=region) == meta
    assert hash_phone(raw, GOOGLE, default_region=region) == sha(google)
    assert hash_phone(raw, META, default_region=region) == sha(meta)


@pytest.mark.parametrize(
    ("raw", "google", "meta"),
    [
        ("  Jane.Doe@Gmail.com ", "janedoe@gmail.com", "jane.doe@gmail.com"),
        ("j.a.n.e@googlemail.com", "jane@googlemail.com", "j.a.n.e@googlemail.com"),
        ("Jane.Doe@example.com", "jane.doe@example.com", "jane.doe@example.com"),
        ("jane.doe@gmail.co.uk", "jane.doe@gmail.co.uk", "jane.doe@gmail.co.uk"),
        ("jane.doe@mail.gmail.com", "jane.doe@mail.gmail.com", "jane.doe@mail.gmail.com"),
        ("Jane.Doe+ads@GMAIL.COM", "janedoe+ads@gmail.com", "jane.doe+ads@gmail.com"),
        ("ÉLODIE@Exemple.fr", "élodie@exemple.fr", "élodie@exemple.fr"),
    ],
)
def test_email_normalisation_and_the_gmail_dot_rule_for_google_only(
    raw: str, google: str, meta: str
) -> None:
    assert normalise_email(raw, GOOGLE) == google
    assert normalise_email(raw, META) == meta
    assert hash_email(raw, GOOGLE) == sha(google)
    assert hash_email(raw, META) == sha(meta)


def test_already_hashed_values_pass_through() -> None:
    digest = sha("jane@example.com")
    for platform in Platform:
        assert hash_email(digest, platform) == digest
        assert hash_phone(digest, platform) == digest
        assert hash_email(f" {digest.upper()} ", platform) == digest  # hex case is not data
    assert is_sha256_hex(digest)
    assert not is_sha256_hex(digest[:-1])
    assert not is_sha256_hex(digest[:-1] + "g")


@pytest.mark.parametrize(
    "raw", ["not-an-email", "a@", "@b.com", "a b@c.com", "a@b@c.com", "", "   ", "...@gmail.com"]
)
def test_bad_emails_are_refused_without_quoting_them(raw: str) -> None:
    platform = GOOGLE if raw == "...@gmail.com" else META
    with pytest.raises(InvalidIdentifier) as caught:
        hash_email(raw, platform)
    assert isinstance(caught.value, ValidationError)
    if raw.strip():
        assert raw.strip() not in caught.value.message


@pytest.mark.parametrize(
    ("raw", "region"), [("4155550123", None), ("12", "US"), ("+1 555", None), ("call me", "US")]
)
def test_bad_phones_are_refused_without_quoting_them(raw: str, region: str | None) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        hash_phone(raw, GOOGLE, default_region=region)
    assert raw not in caught.value.message


def test_sha256_hex() -> None:
    assert sha256_hex("abc") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


# --- members and payloads ------------------------------------------------------------------


def test_hash_member_keeps_distinct_hashes_and_counts_rejects() -> None:
    member = Member(
        "p1",
        emails=("Jane@Example.com", "jane@example.com ", "nope"),
        phones=("415 555 0123", "+14155550123", "x"),
        region="US",
    )
    hashed = hash_member(member, GOOGLE)
    assert hashed.email_hashes == (sha("jane@example.com"),)
    assert hashed.phone_hashes == (sha("+14155550123"),)
    assert hashed.rejected == 2
    assert hashed.usable


def test_google_payload_shape() -> None:
    change = MembershipChange(
        "customers/123/userLists/456",
        added=(Member("p1", emails=("a@example.com",), phones=("+14155550123",)),),
        removed=(Member("p2", emails=("b@example.com",)),),
    )
    plan = build_batches(change, GOOGLE)
    add, remove = plan.batches
    assert (add.operation, remove.operation) == ("add", "remove")
    assert add.body == {
        "operations": [
            {
                "create": {
                    "userIdentifiers": [
                        {"hashedEmail": sha("a@example.com")},
                        {"hashedPhoneNumber": sha("+14155550123")},
                    ]
                }
            }
        ]
    }
    assert remove.body == {
        "operations": [{"remove": {"userIdentifiers": [{"hashedEmail": sha("b@example.com")}]}}]
    }
    assert add.profile_ids == ("p1",)
    assert add.audience_id == "customers/123/userLists/456"


def test_meta_payload_shape_pairs_identifiers_per_member() -> None:
    change = MembershipChange(
        "6123456789",
        added=(
            Member("p1", emails=("a@example.com", "a2@example.com"), phones=("+14155550123",)),
            Member("p2", phones=("+442079460958",)),
        ),
    )
    plan = build_batches(change, META)
    (batch,) = plan.batches
    assert batch.body == {
        "payload": {
            "schema": ["EMAIL", "PHONE"],
            "data": [
                [sha("a@example.com"), sha("14155550123")],
                [sha("a2@example.com"), ""],
                ["", sha("442079460958")],
            ],
        }
    }


def test_batches_are_split_and_members_without_identifiers_are_skipped() -> None:
    added = tuple(Member(f"p{i}", emails=(f"user{i}@example.com",)) for i in range(25))
    removed = (Member("gone", emails=("bad",), phones=()), Member("empty"))
    plan = build_batches(MembershipChange("aud", added, removed), GOOGLE, max_members=10)
    assert [len(b.profile_ids) for b in plan.batches] == [10, 10, 5]
    assert all(b.operation == "add" for b in plan.batches)
    assert plan.skipped == ("gone", "empty")
    assert plan.rejected_identifiers == 1
    with pytest.raises(ValueError):
        build_batches(MembershipChange("aud", added), GOOGLE, max_members=0)


def test_meta_sessions_number_the_batches_of_an_upload() -> None:
    added = tuple(Member(f"p{i}", emails=(f"u{i}@example.com",)) for i in range(5))
    removed = (Member("r", emails=("r@example.com",)),)
    plan = build_batches(
        MembershipChange("aud", added, removed), META, max_members=2, session_id=1000
    )
    sessions = [(b.operation, b.body["session"]) for b in plan.batches]
    assert sessions == [
        ("add", {"session_id": 1000, "batch_seq": 1, "last_batch_flag": False,
                 "estimated_num_total": 5}),
        ("add", {"session_id": 1000, "batch_seq": 2, "last_batch_flag": False,
                 "estimated_num_total": 5}),
        ("add", {"session_id": 1000, "batch_seq": 3, "last_batch_flag": True,
                 "estimated_num_total": 5}),
        ("remove", {"session_id": 1001, "batch_seq": 1, "last_batch_flag": True,
                    "estimated_num_total": 1}),
    ]  # fmt: skip


def test_csv_export_has_a_header_and_hashed_rows() -> None:
    members = [
        Member("p1", emails=("Jane.Doe@gmail.com",), phones=("+14155550123",)),
        Member("p2", emails=("x@example.com", "y@example.com")),
        Member("p3", emails=("invalid",)),
    ]
    out = io.StringIO()
    assert write_members_csv(out, members, GOOGLE) == 3
    assert out.getvalue().splitlines() == [
        "Email,Phone",
        f"{sha('janedoe@gmail.com')},{sha('+14155550123')}",
        f"{sha('x@example.com')},",
        f"{sha('y@example.com')},",
    ]
    meta = io.StringIO()
    write_members_csv(meta, members[:1], META)
    assert meta.getvalue().splitlines() == [
        "email,phone",
        f"{sha('jane.doe@gmail.com')},{sha('14155550123')}",
    ]


# --- no plaintext leaves ---------------------------------------------------------------------

PHONE_FORMATS = [
    ("+1 415 555 {}", "US"),
    ("(212) 555-{}", "US"),
    ("+44 20 7946 {}", None),
    ("020 7946 {}", "GB"),
    ("+33 6 12 34 {}", None),
    ("+49 30 1234{}", None),
]


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str | None]:
    template, region = draw(st.sampled_from(PHONE_FORMATS))
    digits = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    return template.format(digits), region


@st.composite
def members(draw: st.DrawFn) -> tuple[Member, list[str], list[str]]:
    emails = draw(st.lists(st.emails(), max_size=3))
    numbers = draw(st.lists(phones(), max_size=3))
    region = numbers[0][1] if numbers else None
    usable = [raw for raw, r in numbers if r == region or raw.startswith("+")]
    member = Member(
        draw(st.uuids()).hex,
        emails=tuple(emails),
        phones=tuple(usable),
        region=region,
    )
    return member, emails, usable


def _forbidden(emails: list[str], numbers: list[str], region: str | None) -> set[str]:
    found: set[str] = set()
    for email in emails:
        found |= {email, email.strip().lower()}
    for raw in numbers:
        e164 = normalise_phone(raw, GOOGLE, default_region=region)
        found |= {raw, e164, e164[1:], re.sub(r"\D", "", raw)}
    return {f for f in found if len(f) >= 6}


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(members(), min_size=1, max_size=8), st.sampled_from(list(Platform)))
def test_no_plain_email_or_phone_appears_in_any_payload(
    drawn: list[tuple[Member, list[str], list[str]]], platform: Platform
) -> None:
    people = [m for m, _, _ in drawn]
    half = len(people) // 2
    plan = build_batches(
        MembershipChange("aud", people[:half], people[half:]), platform, session_id=7
    )
    csv_out = io.StringIO()
    write_members_csv(csv_out, people, platform)
    outbound = json.dumps([b.body for b in plan.batches]) + csv_out.getvalue()
    assert "@" not in outbound
    assert "+" not in outbound
    for member, emails, numbers in drawn:
        for text in _forbidden(emails, numbers, member.region):
            assert text not in outbound, "a plain identifier leaked"
    # and what is there is hashes: every cell of every payload is a digest or empty
    cells = re.findall(r'"([^"]*)"', json.dumps([b.body for b in plan.batches]))
    structural = {
        "operations", "create", "remove", "userIdentifiers", "hashedEmail",
        "hashedPhoneNumber", "payload", "schema", "data", "EMAIL", "PHONE", "session",
        "session_id", "batch_seq", "last_batch_flag", "estimated_num_total", "",
    }  # fmt: skip
    assert all(HEX64.fullmatch(c) or c in structural for c in cells)
