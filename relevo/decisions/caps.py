"""Caps: per-profile frequency caps, offer budgets and global placement limits.

Caps count impressions, not decisions: an offer decided but never shown uses up nothing.
Per-profile caps read the profile's recent impressions (kept on the profile by the processor,
exact over sliding windows); budgets and placement limits read impression counters kept per
hour (a window of a day sums 24 hourly counters, so a global window slides by the hour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from relevo.errors import ErrorDetail, ValidationError
from relevo.profiles.computed_defs import parse_window
from relevo.profiles.model import EXPOSURES_KEPT

HOUR = 3600
MAX_PROFILE_CAP = EXPOSURES_KEPT  # a per-profile cap can only count what a profile keeps
KEEP_SECONDS = 90 * 86400  # the longest window a per-profile cap may have
COUNTED_SECONDS = 31 * 86400  # the longest window of a budget or placement limit


class CapDefinition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    impressions: int
    per: str = "lifetime"  # a window: "30m", "1h", "7d", ... or "lifetime"


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``impressions`` within the last ``seconds`` (``None``: ever)."""

    impressions: int
    seconds: int | None

    def describe(self) -> str:
        per = "ever" if self.seconds is None else f"per {self.seconds}s"
        return f"{self.impressions} impressions {per}"


def compile_cap(definition: CapDefinition, *, per_profile: bool, where: str) -> Cap:
    """Validate a cap definition. Raises ValidationError located at ``where``."""

    def fail(message: str) -> ValidationError:
        return ValidationError(
            f"{where}: {message}", details=[ErrorDetail(where, message, "invalid")]
        )

    try:
        window = parse_window(definition.per)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    seconds = window.seconds if window else None
    if definition.impressions < 0:
        raise fail("impressions must be 0 or more")
    if per_profile:
        if definition.impressions > MAX_PROFILE_CAP:
            raise fail(f"a per-profile cap allows at most {MAX_PROFILE_CAP} impressions")
        if seconds is None or seconds > KEEP_SECONDS:
            raise fail("a per-profile cap needs a window of at most 90 days")
    elif seconds is not None and (seconds % HOUR or seconds > COUNTED_SECONDS):
        raise fail("a budget or placement limit window is whole hours, at most 31 days")
    return Cap(definition.impressions, seconds)


def within_profile_caps(caps: tuple[Cap, ...], shown_at: list[int] | None, now: float) -> bool:
    """Whether one more impression fits every cap, given the unix seconds of recent ones."""
    if not caps:
        return True
    if not shown_at:
        return all(cap.impressions > 0 for cap in caps)
    for cap in caps:
        assert cap.seconds is not None  # per-profile caps always have a window
        since = now - cap.seconds
        if sum(1 for at in shown_at if at > since) >= cap.impressions:
            return False
    return True


def record_impression(exposures: dict[str, list[int]], key: str, at: float) -> None:
    """Remember an impression under ``key`` (an offer id or ``placement:<id>``), keeping the
    newest ``MAX_PROFILE_CAP`` within ``KEEP_SECONDS``."""
    shown = exposures.setdefault(key, [])
    shown.append(int(at))
    shown.sort()
    oldest = at - KEEP_SECONDS
    del shown[: max(len(shown) - MAX_PROFILE_CAP, sum(1 for t in shown if t <= oldest))]


def counter_keys(scope: str, name: str, at: float) -> list[tuple[str, int | None]]:
    """The lifetime and hourly impression counters (key, hour) an impression adds one to."""
    hour = int(at // HOUR) * HOUR
    return [(f"{scope}:{name}", None), (f"{scope}:{name}@{hour}", hour)]


def within_counter(
    cap: Cap, scope: str, name: str, counters: Mapping[str, int], now: float
) -> bool:
    """Whether one more impression fits ``cap`` given the impression counters."""
    if cap.seconds is None:
        return counters.get(f"{scope}:{name}", 0) < cap.impressions
    hour = int(now // HOUR) * HOUR
    hours = math.ceil(cap.seconds / HOUR)
    total = 0
    for i in range(hours):
        total += counters.get(f"{scope}:{name}@{hour - i * HOUR}", 0)
    return total < cap.impressions
