"""Ad audiences: normalised, SHA-256-hashed identifiers for Google Customer Match and Meta.

No plain email address or phone number leaves this module: payloads and CSV rows hold only
lower-case hex SHA-256 digests, and error messages never quote the value they reject.

Normalisation, per platform (checked against the platforms' documentation):

- Email, both platforms: trim surrounding whitespace, lower-case.
  Google additionally removes every "." in the local part of ``gmail.com`` and
  ``googlemail.com`` addresses (and only those domains). Google's Campaign Manager 360 enhanced
  conversions guide lists "remove all periods (.) preceding the domain name in gmail.com and
  googlemail.com email addresses" among the normalisation steps
  (developers.google.com/doubleclick-advertisers/guides/conversions_ec), and the Google Ads API
  Customer Match guide says that removing them is not required there "since they'll still be
  accepted" (developers.google.com/google-ads/api/docs/remarketing/audience-types/customer-match):
  so removing them suits every Google product. Meta's rules
  (developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters)
  are trim and lower-case only, so Meta keeps the dots. Neither platform strips ``+tags``, and
  neither maps googlemail.com to gmail.com, so neither is done.
- Phone: parsed with ``phonenumbers`` into E.164. Google hashes E.164 with its plus
  (``+14155550123``); Meta hashes the digits with the country code and no plus, symbols or
  leading zeros (``14155550123``; Meta's own vector: US ``(650)555-1212`` -> ``16505551212``).
  A number without a ``+`` needs a default region (ISO 3166 alpha-2, per member or per call);
  the country code is never guessed.
- A value that already is a SHA-256 digest (64 hex characters) passes through, lower-cased.
  It cannot be re-normalised: a pre-hashed phone must have been hashed in the platform's form.

Payloads (``build_batches``), at most ``max_members`` members each (Meta takes 10,000 per call):

- Google Ads ``OfflineUserDataJobService.AddOfflineUserDataJobOperations``:
  ``{"operations": [{"create" | "remove": {"userIdentifiers": [{"hashedEmail": h},
  {"hashedPhoneNumber": h}]}}]}``, one ``UserData`` per member.
- Meta ``/{audience_id}/users`` (POST to add, DELETE to remove), multi-key:
  ``{"payload": {"schema": ["EMAIL", "PHONE"], "data": [[email_hash, phone_hash], ...]}}``, a row
  per identifier pair of a member with ``""`` where one side is missing, plus a ``session`` block
  when a ``session_id`` is given.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import zip_longest
from typing import Any, Literal, TextIO

import phonenumbers

from relevo.errors import ValidationError

__all__ = [
    "AudienceBatch",
    "AudiencePlan",
    "HashedMember",
    "InvalidIdentifier",
    "Member",
    "MembershipChange",
    "Platform",
    "build_batches",
    "hash_email",
    "hash_member",
    "hash_phone",
    "is_sha256_hex",
    "normalise_email",
    "normalise_phone",
    "sha256_hex",
    "write_members_csv",
]

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
META_MAX_MEMBERS = 10_000
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class Platform(StrEnum):
    GOOGLE = "google"  # Google Ads Customer Match (rules valid for CM360 too)
    META = "meta"  # Meta Custom Audiences


class InvalidIdentifier(ValidationError):
    """An identifier that cannot be normalised; the message never quotes the value."""

    code = "invalid_identifier"


def sha256_hex(text: str) -> str:
    """The lower-case hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """Whether ``value`` (trimmed) already is a SHA-256 digest in hex."""
    return bool(_SHA256_HEX.fullmatch(value.strip()))


def normalise_email(raw: str, platform: Platform) -> str:
    """Trim and lower-case; for Google, drop the dots of a gmail.com/googlemail.com local part.

    Raises:
        InvalidIdentifier: not an address (no single ``@`` between non-empty parts, or spaces).
    """
    text = raw.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or "@" in local or any(c.isspace() for c in text):
        raise InvalidIdentifier("an email identifier is not an email address")
    if platform is Platform.GOOGLE and domain in GMAIL_DOMAINS:
        local = local.replace(".", "")
        if not local:
            raise InvalidIdentifier("an email identifier is not an email address")
    return f"{local}@{domain}"


def normalise_phone(raw: str, platform: Platform, *, default_region: str | None = None) -> str:
    """E.164 for Google (``+14155550123``), its digits for Meta (``14155550123``).

    Args:
        raw: the number as stored; without a leading ``+`` (or ``00``-style international
            prefix) it is read as a national number of ``default_region``.
        platform: whose rules to apply.
        default_region: ISO 3166 alpha-2 region for national numbers (``"US"``, ``"GB"``).

    Raises:
        InvalidIdentifier: the number cannot be parsed or is not a possible number.
    """
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier(
            "a phone identifier could not be read (a national number needs a region)"
        ) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentifier("a phone identifier is not a possible phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164 if platform is Platform.GOOGLE else e164.removeprefix("+")


def hash_email(raw: str, platform: Platform) -> str:
    """The platform's hash of an email address; a SHA-256 hex value passes through."""
    if is_sha256_hex(raw):
        return raw.strip().lower()
    return sha256_hex(normalise_email(raw, platform))


def hash_phone(raw: str, platform: Platform, *, default_region: str | None = None) -> str:
    """The platform's hash of a phone number; a SHA-256 hex value passes through."""
    if is_sha256_hex(raw):
        return raw.strip().lower()
    return sha256_hex(normalise_phone(raw, platform, default_region=default_region))


@dataclass(frozen=True)
class Member:
    """A profile's identifiers as stored (plain or already hashed).

    ``region`` is the default region for this member's national-format phone numbers.
    """

    profile_id: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    region: str | None = None


@dataclass(frozen=True)
class HashedMember:
    """A member's distinct hashed identifiers; ``rejected`` counts identifiers left out."""

    profile_id: str
    email_hashes: tuple[str, ...]
    phone_hashes: tuple[str, ...]
    rejected: int = 0

    @property
    def usable(self) -> bool:
        return bool(self.email_hashes or self.phone_hashes)

    def rows(self) -> list[tuple[str, str]]:
        """``(email_hash, phone_hash)`` pairs, ``""`` where one side has run out."""
        return list(zip_longest(self.email_hashes, self.phone_hashes, fillvalue=""))


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def hash_member(
    member: Member, platform: Platform, *, default_region: str | None = None
) -> HashedMember:
    """Hash every identifier of ``member``; the ones that do not normalise are counted, not kept."""
    region = member.region or default_region
    rejected = 0
    emails: list[str] = []
    phones: list[str] = []
    for raw in member.emails:
        try:
            emails.append(hash_email(raw, platform))
        except InvalidIdentifier:
            rejected += 1
    for raw in member.phones:
        try:
            phones.append(hash_phone(raw, platform, default_region=region))
        except InvalidIdentifier:
            rejected += 1
    return HashedMember(member.profile_id, _distinct(emails), _distinct(phones), rejected)


@dataclass(frozen=True)
class MembershipChange:
    """Profiles that entered (``added``) or left (``removed``) one platform audience."""

    audience_id: str
    added: Sequence[Member] = ()
    removed: Sequence[Member] = ()


@dataclass(frozen=True)
class AudienceBatch:
    """One request's worth: ``body`` is JSON-ready and holds hashes only.

    ``profile_ids`` say which profiles the batch carries (for bookkeeping; not in ``body``).
    For Meta, send ``add`` as POST and ``remove`` as DELETE to ``/{audience_id}/users``.
    """

    platform: Platform
    operation: Literal["add", "remove"]
    audience_id: str
    body: dict[str, Any]
    profile_ids: tuple[str, ...]


@dataclass(frozen=True)
class AudiencePlan:
    """The batches of a membership change, and what was left out.

    ``skipped`` lists profiles with no usable identifier; ``rejected_identifiers`` counts single
    identifiers that did not normalise (for a metric; the values are not kept).
    """

    batches: tuple[AudienceBatch, ...]
    skipped: tuple[str, ...]
    rejected_identifiers: int


def _google_body(operation: str, members: Sequence[HashedMember]) -> dict[str, Any]:
    verb = "create" if operation == "add" else "remove"
    return {
        "operations": [
            {
                verb: {
                    "userIdentifiers": [{"hashedEmail": h} for h in m.email_hashes]
                    + [{"hashedPhoneNumber": h} for h in m.phone_hashes]
                }
            }
            for m in members
        ]
    }


def _meta_body(members: Sequence[HashedMember]) -> dict[str, Any]:
    rows = [list(row) for m in members for row in m.rows()]
    return {"payload": {"schema": ["EMAIL", "PHONE"], "data": rows}}


def build_batches(
    change: MembershipChange,
    platform: Platform,
    *,
    default_region: str | None = None,
    max_members: int = META_MAX_MEMBERS,
    session_id: int | None = None,
) -> AudiencePlan:
    """Turn a membership change into request bodies of hashed identifiers for ``platform``.

    Args:
        change: who entered and who left the audience.
        platform: whose payload shape and normalisation rules to use.
        default_region: region for national phone numbers of members without their own.
        max_members: members per batch (Meta accepts 10,000 per request).
        session_id: Meta only: adds a ``session`` block (batch sequence, last-batch flag) to
            each batch so Meta can tell the batches of one upload apart. The add batches use
            ``session_id``, the remove batches (a separate upload) ``session_id + 1``.

    Returns:
        Add batches first, then remove batches, in input order.
    """
    if max_members < 1:
        raise ValueError("max_members must be at least 1")
    batches: list[AudienceBatch] = []
    skipped: list[str] = []
    rejected = 0
    groups: list[tuple[Literal["add", "remove"], Sequence[Member]]] = [
        ("add", change.added),
        ("remove", change.removed),
    ]
    for operation, members in groups:
        hashed: list[HashedMember] = []
        for member in members:
            result = hash_member(member, platform, default_region=default_region)
            rejected += result.rejected
            if result.usable:
                hashed.append(result)
            else:
                skipped.append(member.profile_id)
        for start in range(0, len(hashed), max_members):
            chunk = hashed[start : start + max_members]
            body = (
                _google_body(operation, chunk) if platform is Platform.GOOGLE else _meta_body(chunk)
            )
            ids = tuple(m.profile_id for m in chunk)
            batches.append(AudienceBatch(platform, operation, change.audience_id, body, ids))
    if session_id is not None and platform is Platform.META:
        batches = _with_sessions(batches, session_id)
    return AudiencePlan(tuple(batches), tuple(skipped), rejected)


def _with_sessions(batches: list[AudienceBatch], session_id: int) -> list[AudienceBatch]:
    out: list[AudienceBatch] = []
    for offset, operation in enumerate(("add", "remove")):
        group = [b for b in batches if b.operation == operation]
        total = sum(len(b.body["payload"]["data"]) for b in group)
        for seq, batch in enumerate(group, start=1):
            session = {
                "session_id": session_id + offset,
                "batch_seq": seq,
                "last_batch_flag": seq == len(group),
                "estimated_num_total": total,
            }
            out.append(
                AudienceBatch(
                    batch.platform,
                    batch.operation,
                    batch.audience_id,
                    {"session": session, **batch.body},
                    batch.profile_ids,
                )
            )
    return out


CSV_HEADERS = {Platform.GOOGLE: ("Email", "Phone"), Platform.META: ("email", "phone")}


def write_members_csv(
    stream: TextIO,
    members: Iterable[Member],
    platform: Platform,
    *,
    default_region: str | None = None,
) -> int:
    """Write a hashed customer file: a header row, then one row per identifier pair.

    The headers are the platforms' customer-file column names (``Email,Phone`` for Google,
    ``email,phone`` for Meta); the cells are SHA-256 hex digests or empty. Members with no usable
    identifier are left out.

    Returns:
        The number of data rows written (the header excluded).
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_HEADERS[platform])
    rows = 0
    for member in members:
        hashed = hash_member(member, platform, default_region=default_region)
        for row in hashed.rows():
            writer.writerow(row)
            rows += 1
    return rows
