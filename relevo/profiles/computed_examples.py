"""Example computed traits, as the data a ``computed_traits.yaml`` holds.

``docs/computed-traits.md`` shows the same list as YAML (a test keeps the two equal).
"""

from __future__ import annotations

from typing import Any

from relevo.profiles.computed_defs import ComputedTraitDef, parse_definitions

EXAMPLES: list[dict[str, Any]] = [
    {
        "name": "orders_30d",
        "description": "Orders completed in the last 30 days.",
        "kind": "count",
        "event": "Order Completed",
        "window": "30d",
    },
    {
        "name": "revenue_lifetime",
        "description": "Revenue of every order ever completed.",
        "kind": "sum",
        "event": "Order Completed",
        "property": "revenue",
    },
    {
        "name": "favorite_category_90d",
        "description": "The category viewed most often in the last 90 days.",
        "kind": "most_frequent",
        "event": "Product Viewed",
        "property": "category",
        "window": "90d",
    },
    {
        "name": "last_viewed_product",
        "description": "The product id of the latest product view.",
        "kind": "last",
        "event": "Product Viewed",
        "property": "product_id",
    },
    {
        "name": "days_since_last_order",
        "description": "Whole days since the latest completed order.",
        "kind": "days_since_last",
        "event": "Order Completed",
    },
]


def example_definitions() -> list[ComputedTraitDef]:
    return parse_definitions(EXAMPLES)
