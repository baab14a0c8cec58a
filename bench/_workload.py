"""Realistic Segment traffic for the benchmarks, generated up front from a seed.

A population of people (most signed in, some anonymous) browses a shop: pages, product views,
searches, carts, orders, and the odd ``identify``. Each call looks like what analytics.js puts in
a ``/v1/batch`` (``messageId``, ``anonymousId``, ``timestamp``, a ``context`` with the page,
user agent, locale, library and timezone): 530-770 bytes of JSON, 650 on average (analytics.js
itself sends 600-1,000, with ``userAgentData`` and ``_metadata``). Batches are encoded to bytes
before the clock starts so the load generator only has to write them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

SHOP = "https://shop.example"
LIBRARY = {"name": "analytics.js", "version": "npm:next-1.84.3"}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "nl-NL")
TIMEZONES = ("America/New_York", "Europe/London", "Europe/Berlin", "Europe/Paris", "UTC")
CATEGORIES = ("running", "trail", "tennis", "yoga", "hiking", "cycling", "swimming", "kids")
PLANS = ("free", "plus", "gold")
REFERRERS = ("", "https://www.google.com/", "https://www.instagram.com/", "https://news.example/")
# (event name, weight): what a shop's track calls look like, most frequent first
TRACK_EVENTS = (
    ("Product Viewed", 40),
    ("Product List Viewed", 15),
    ("Products Searched", 12),
    ("Product Added", 12),
    ("Cart Viewed", 8),
    ("Checkout Started", 5),
    ("Order Completed", 3),
    ("Signed In", 3),
    ("Newsletter Subscribed", 2),
)
TRACK_SHARE, PAGE_SHARE = 0.55, 0.35  # the rest are identify calls (signed-in people only)
SIGNED_IN_SHARE = 0.7


@dataclass(frozen=True)
class Person:
    anonymous_id: str
    user_id: str | None
    email: str
    user_agent: str
    locale: str
    timezone: str


def _uuid4(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def population(count: int, seed: int) -> list[Person]:
    rng = random.Random(seed)
    people = []
    for n in range(count):
        signed_in = rng.random() < SIGNED_IN_SHARE
        people.append(
            Person(
                anonymous_id=_uuid4(rng),
                user_id=f"user-{seed}-{n:06d}" if signed_in else None,
                email=f"person{n}@mail.example",
                user_agent=rng.choice(USER_AGENTS),
                locale=rng.choice(LOCALES),
                timezone=rng.choice(TIMEZONES),
            )
        )
    return people


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class EventFactory:
    """Events for a population; ``stream`` keeps messageIds of separate factories apart."""

    def __init__(self, people: list[Person], seed: int, stream: int) -> None:
        self._people = people
        self._rng = random.Random(seed * 1_000_003 + stream)
        self._stream = stream
        self._serial = 0
        names, weights = zip(*TRACK_EVENTS, strict=True)
        self._track_names: tuple[str, ...] = names
        self._track_weights: tuple[int, ...] = weights

    def _message_id(self, at: datetime) -> str:
        self._serial += 1
        rand = f"{self._rng.getrandbits(64):016x}"
        millis = int(at.timestamp() * 1000)
        # random like a uuid4, and unique by construction: the last group is stream + serial
        serial = f"{self._stream:04x}{self._serial:08x}"
        return f"ajs-next-{millis}-{rand[:8]}-{rand[8:12]}-{rand[12:16]}-{serial}"

    def _page(self, rng: random.Random) -> tuple[str, str, str, dict[str, str]]:
        category = rng.choice(CATEGORIES)
        product = f"sku-{rng.randrange(5000):05d}"
        if rng.random() < 0.6:
            path, title, name = f"/p/{product}", f"{category.title()} {product}", "Product"
        else:
            path, title, name = f"/c/{category}", f"{category.title()} | Shop", "Category"
        page = {"path": path, "referrer": rng.choice(REFERRERS), "title": title, "url": SHOP + path}
        return name, category, product, page

    def event(self, at: datetime) -> dict[str, Any]:
        rng = self._rng
        person = rng.choice(self._people)
        page_name, category, product, page = self._page(rng)
        call: dict[str, Any]
        roll = rng.random()
        if roll < TRACK_SHARE or (roll >= TRACK_SHARE + PAGE_SHARE and person.user_id is None):
            name = rng.choices(self._track_names, self._track_weights)[0]
            price = round(rng.uniform(15, 250), 2)
            properties: dict[str, Any] = {"product_id": product, "category": category}
            if name == "Products Searched":
                properties = {"query": f"{category} {rng.choice(('shoes', 'socks', 'shorts'))}"}
            elif name in ("Order Completed", "Checkout Started"):
                properties = {"order_id": f"o-{rng.getrandbits(40):x}", "revenue": price}
            properties["price"] = price
            call = {"type": "track", "event": name, "properties": properties}
        elif roll < TRACK_SHARE + PAGE_SHARE:
            call = {"type": "page", "name": page_name, "category": category, "properties": page}
        else:
            call = {
                "type": "identify",
                "traits": {
                    "email": person.email,
                    "plan": rng.choice(PLANS),
                    "first_name": "Ada",
                    "favourite_category": category,
                },
            }
        call.update(
            {
                "context": {
                    "page": {k: v for k, v in page.items() if k != "referrer"},
                    "userAgent": person.user_agent,
                    "locale": person.locale,
                    "library": LIBRARY,
                    "timezone": person.timezone,
                },
                "messageId": self._message_id(at),
                "anonymousId": person.anonymous_id,
                "timestamp": _iso(at - timedelta(milliseconds=rng.randrange(2000))),
            }
        )
        if person.user_id is not None:
            call["userId"] = person.user_id
        return call


@dataclass(frozen=True)
class Batches:
    bodies: list[bytes]
    events: int
    event_bytes_mean: float
    event_bytes_min: int
    event_bytes_max: int


def make_batches(factory: EventFactory, events: int, batch: int) -> Batches:
    """``events`` events in ``/v1/batch`` bodies of ``batch`` (the last one may be smaller)."""
    encoder = msgspec.json.Encoder()
    bodies: list[bytes] = []
    sizes: list[int] = []
    now = datetime.now(UTC)
    remaining = events
    while remaining > 0:
        encoded = [encoder.encode(factory.event(now)) for _ in range(min(batch, remaining))]
        sizes += [len(e) for e in encoded]
        remaining -= len(encoded)
        bodies.append(
            b'{"batch":[' + b",".join(encoded) + b'],"sentAt":"' + _iso(now).encode() + b'"}'
        )
    return Batches(
        bodies,
        events,
        sum(sizes) / len(sizes) if sizes else 0.0,
        min(sizes, default=0),
        max(sizes, default=0),
    )
