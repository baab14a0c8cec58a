"""Feedback: which events report an impression, a click or a conversion of a decided offer.

The decide response tells the caller what to send back: ``Offer Viewed``, ``Offer Clicked``
and ``Offer Converted`` track events whose properties carry ``decision_id``, ``offer_id`` and
``placement``. A placement's ``conversion_events`` (e.g. ``Order Completed``) count as
conversions too: with a ``decision_id`` of their own, or, without one, when they follow a click
on that placement within its attribution window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from relevo.decisions.log import Feedback, FeedbackKind
from relevo.events.model import Event
from relevo.profiles.model import Profile, Touch

EVENT_KINDS: dict[str, FeedbackKind] = {
    "Offer Viewed": "impression",
    "Offer Clicked": "click",
    "Offer Converted": "conversion",
}
KIND_EVENTS: dict[FeedbackKind, str] = {kind: name for name, kind in EVENT_KINDS.items()}
VALUE_PROPERTIES = ("revenue", "value", "total")


@dataclass(frozen=True, slots=True)
class Attribution:
    """A placement whose clicks earn credit for ``conversion_events`` within ``window``."""

    placement: str
    window: timedelta


AttributionMap = Mapping[str, tuple[Attribution, ...]]  # conversion event name -> placements


def feedback_of(event: Event, profile: Profile, attribution: AttributionMap) -> list[Feedback]:
    """The feedback ``event`` reports, given the profile's last clicks (before this event)."""
    if event.type != "track" or event.event is None:
        return []
    props = event.properties
    kind = EVENT_KINDS.get(event.event)
    conversions = attribution.get(event.event, ())
    if kind is None and not conversions:
        return []
    decision_id, offer = props.get("decision_id"), props.get("offer_id")
    placement = props.get("placement")
    if isinstance(decision_id, str) and isinstance(offer, str) and decision_id and offer:
        return [
            Feedback(
                decision_id=decision_id,
                offer=offer,
                kind=kind or "conversion",
                at=event.timestamp,
                placement=placement if isinstance(placement, str) else "",
                value=_value(props) if kind != "impression" else 0.0,
                message_id=event.message_id,
            )
        ]
    found = []
    for rule in conversions:
        touch = profile.touches.get(rule.placement)
        if touch is not None and touch.at <= event.timestamp <= touch.at + rule.window:
            found.append(
                Feedback(
                    decision_id=touch.decision_id,
                    offer=touch.offer,
                    kind="conversion",
                    at=event.timestamp,
                    placement=rule.placement,
                    value=_value(props),
                    message_id=event.message_id,
                )
            )
    return found


def remember_click(profile: Profile, feedback: Feedback) -> None:
    """A click is the touch later conversions are attributed to."""
    if feedback.kind == "click" and feedback.placement:
        touch = profile.touches.get(feedback.placement)
        if touch is None or feedback.at >= touch.at:
            profile.touches[feedback.placement] = Touch(
                feedback.decision_id, feedback.offer, feedback.at
            )


def _value(props: Mapping[str, object]) -> float:
    for name in VALUE_PROPERTIES:
        value = props.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0
