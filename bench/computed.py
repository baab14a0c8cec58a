"""Computed traits: the cost of ``update`` per event, in process, with no I/O.

30 definitions of every kind and window unit over 100,000 synthetic events (a shop's mix of
product views, pages, searches, carts and orders, a few minutes out of order, spread over
``profiles`` people and ``days`` days). Reported: µs per event for ``update`` with the
definitions as a plain list (what the processor passes) and as a ``TraitSet``, µs per
``values`` call, and the encoded size of the computed state per profile.

Run it with ``python -m bench.computed``.
"""

from __future__ import annotations

import gc
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from relevo.events.model import Event
from relevo.profiles import computed
from relevo.profiles.computed import ComputedTraitDef, TraitSet, parse_definitions
from relevo.profiles.model import Profile

START = datetime(2026, 1, 1, tzinfo=UTC)

DEFINITIONS: list[dict[str, Any]] = [
    {"name": "orders_30d", "kind": "count", "event": "Order Completed", "window": "30d"},
    {"name": "orders_lifetime", "kind": "count", "event": "Order Completed"},
    {"name": "revenue_lifetime", "kind": "sum", "event": "Order Completed", "property": "revenue"},
    {
        "name": "revenue_30d",
        "kind": "sum",
        "event": "Order Completed",
        "property": "revenue",
        "window": "30d",
    },
    {"name": "aov", "kind": "average", "event": "Order Completed", "property": "revenue"},
    {
        "name": "max_order_90d",
        "kind": "max",
        "event": "Order Completed",
        "property": "revenue",
        "window": "90d",
    },
    {
        "name": "min_order_90d",
        "kind": "min",
        "event": "Order Completed",
        "property": "revenue",
        "window": "90d",
    },
    {"name": "first_order", "kind": "first", "event": "Order Completed", "property": "revenue"},
    {"name": "last_order", "kind": "last", "event": "Order Completed", "property": "revenue"},
    {"name": "days_since_last_order", "kind": "days_since_last", "event": "Order Completed"},
    {
        "name": "favorite_category_90d",
        "kind": "most_frequent",
        "event": "Product Viewed",
        "property": "category",
        "window": "90d",
    },
    {
        "name": "last_viewed_product",
        "kind": "last",
        "event": "Product Viewed",
        "property": "product_id",
    },
    {
        "name": "distinct_products_7d",
        "kind": "distinct_count",
        "event": "Product Viewed",
        "property": "product_id",
        "window": "7d",
    },
    {"name": "views_1h", "kind": "count", "event": "Product Viewed", "window": "1h"},
    {"name": "views_24h", "kind": "count", "event": "Product Viewed", "window": "24h"},
    {"name": "views_7d", "kind": "count", "event": "Product Viewed", "window": "7d"},
    {"name": "added_30d", "kind": "count", "event": "Product Added", "window": "30d"},
    {
        "name": "added_value_30d",
        "kind": "sum",
        "event": "Product Added",
        "property": "price",
        "window": "30d",
    },
    {
        "name": "distinct_categories_30d",
        "kind": "distinct_count",
        "event": "Product Viewed",
        "property": "category",
        "window": "30d",
    },
    {"name": "pages_7d", "kind": "count", "type": "page", "window": "7d"},
    {"name": "pages_lifetime", "kind": "count", "type": "page"},
    {"name": "last_page", "kind": "last", "type": "page", "property": "path"},
    {"name": "searches_24h", "kind": "count", "event": "Products Searched", "window": "24h"},
    {"name": "last_search", "kind": "last", "event": "Products Searched", "property": "query"},
    {
        "name": "top_search_30d",
        "kind": "most_frequent",
        "event": "Products Searched",
        "property": "query",
        "window": "30d",
    },
    {
        "name": "usd_orders_90d",
        "kind": "count",
        "event": "Order Completed",
        "where": {"currency": "USD"},
        "window": "90d",
    },
    {
        "name": "premium_orders",
        "kind": "count",
        "event": "Order Completed",
        "where": {"customer.tier": ["gold", "platinum"]},
    },
    {"name": "checkouts_30m", "kind": "count", "event": "Checkout Started", "window": "30m"},
    {
        "name": "days_since_last_view_30d",
        "kind": "days_since_last",
        "event": "Product Viewed",
        "window": "30d",
    },
    {"name": "first_campaign", "kind": "first", "type": "track", "property": "campaign.source"},
]

# (weight, event type, name)
MIX: list[tuple[int, str, str]] = [
    (40, "track", "Product Viewed"),
    (25, "page", "Home"),
    (10, "track", "Product Added"),
    (10, "track", "Products Searched"),
    (5, "track", "Order Completed"),
    (5, "track", "Checkout Started"),
    (5, "track", "Newsletter Opened"),
]
CATEGORIES = [f"category-{i}" for i in range(12)]
QUERIES = [f"query {i}" for i in range(40)]


def definitions() -> list[ComputedTraitDef]:
    return parse_definitions(DEFINITIONS)


def synthetic_events(count: int, profiles: int, days: int, seed: int) -> list[tuple[int, Event]]:
    """(profile index, event) pairs in arrival order; event times up to 10 minutes late."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in MIX]
    step = days * 86400 / count
    found: list[tuple[int, Event]] = []
    for i in range(count):
        _, kind, name = rng.choices(MIX, weights)[0]
        received = START + timedelta(seconds=i * step)
        props: dict[str, Any] = {}
        if name in {"Product Viewed", "Product Added"}:
            props = {
                "product_id": f"sku-{rng.randrange(500)}",
                "category": rng.choice(CATEGORIES),
                "price": round(rng.uniform(5, 200), 2),
            }
        elif name == "Products Searched":
            props = {"query": rng.choice(QUERIES)}
        elif name == "Order Completed":
            props = {
                "revenue": round(rng.uniform(10, 500), 2),
                "currency": rng.choice(["USD", "EUR"]),
                "customer": {"tier": rng.choice(["basic", "gold", "platinum"])},
            }
        elif kind == "page":
            props = {"path": f"/{rng.randrange(30)}"}
        if rng.random() < 0.1:
            props["campaign"] = {"source": rng.choice(["google", "newsletter", "partner"])}
        found.append(
            (
                rng.randrange(profiles),
                Event(
                    type="page" if kind == "page" else "track",
                    message_id=f"m-{i:08d}",
                    source="bench",
                    received_at=received,
                    timestamp=received - timedelta(seconds=rng.uniform(0, 600)),
                    event=name if kind == "track" else None,
                    name=name if kind == "page" else None,
                    properties=props,
                ),
            )
        )
    return found


def _time_updates(
    defs: list[ComputedTraitDef] | TraitSet, events: list[tuple[int, Event]], profiles: int
) -> tuple[float, list[Profile]]:
    people = [Profile(id=f"p{i}", created_at=START) for i in range(profiles)]
    update = computed.update
    gc.collect()
    began = time.perf_counter()
    for index, event in events:
        update(defs, people[index], event)
    return time.perf_counter() - began, people


def run(
    events: int = 100_000,
    profiles: int = 1000,
    days: int = 60,
    seed: int = 1,
    repeat: int = 3,
    out: str | None = None,
) -> dict[str, Any]:
    """Time ``update`` (best of ``repeat``) and ``values``; print a table; write JSON to
    ``out`` if given."""
    defs = definitions()
    workload = synthetic_events(events, profiles, days, seed)
    # best of ``repeat`` passes, each into fresh profiles
    as_list, people = min(
        (_time_updates(defs, workload, profiles) for _ in range(repeat)), key=lambda r: r[0]
    )
    trait_set = TraitSet(defs)
    as_set = min(_time_updates(trait_set, workload, profiles)[0] for _ in range(repeat))
    now = START + timedelta(days=days)
    reading = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for person in people:
            computed.values(defs, person, now)
        reading = min(reading, time.perf_counter() - began)
    sizes = [len(msgspec.json.encode(p.computed)) for p in people]
    result = {
        "definitions": len(defs),
        "events": events,
        "profiles": profiles,
        "days": days,
        "update_us_per_event_list": as_list / events * 1e6,
        "update_us_per_event_traitset": as_set / events * 1e6,
        "values_us_per_profile": reading / profiles * 1e6,
        "state_bytes_per_profile_mean": sum(sizes) / len(sizes),
        "state_bytes_per_profile_max": max(sizes),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        print(f"{key:<{width}}  {shown:>12}")
    if out is not None:
        Path(out).write_text(msgspec.json.format(msgspec.json.encode(result)).decode() + "\n")
    return result


if __name__ == "__main__":
    run()
