"""The stored state of computed traits: per trait, time buckets of partial aggregates.

One layout serves every kind; each kind uses the fields it needs (the others keep their
defaults and are left out of the encoding, whose field names are one letter):

=================  ============================================================
kind               fields of a ``Bucket``
=================  ============================================================
count              ``n`` (matching events)
sum, average       ``n`` (numeric values), ``total``
min, max           ``value`` (the extreme)
first, last        ``value``, ``at`` (event time, epoch seconds), ``mid`` (message id)
days_since_last    ``at``, ``mid``
distinct_count     ``values`` (value key -> 1)
most_frequent      ``values`` (value key -> occurrences)
=================  ============================================================

Buckets are keyed by ``floor(event time / width)`` (``0`` for a lifetime trait). The module
imports nothing from the rest of Relevo so the profile model can hold it.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Bucket(
    msgspec.Struct,
    omit_defaults=True,
    gc=False,  # no reference cycles: the collector need not track the many buckets
    rename={"n": "n", "total": "s", "value": "v", "at": "t", "mid": "m", "values": "c"},
):
    """The partial aggregate of one trait over the events of one time bucket."""

    n: int = 0
    total: int | float = 0
    value: Any = None
    at: float = 0.0
    mid: str = ""
    values: dict[str, int] | None = None


class TraitState(msgspec.Struct, array_like=True, gc=False):
    """One computed trait on one profile.

    ``sig`` fingerprints the definition the state was built under: a changed definition
    (another kind, window, property or filter) starts over instead of misreading old state.
    ``cap`` bounds ``Bucket.values`` (distinct_count, most_frequent) and survives merges.
    """

    kind: str
    sig: str
    buckets: dict[int, Bucket] = msgspec.field(default_factory=dict)
    cap: int = 0
