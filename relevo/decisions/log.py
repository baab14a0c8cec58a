"""The decision log: what was decided, with which probability, from which features.

Every decision is logged with the probability with which each eligible offer would have been
put first, and with the features it was made from, so a policy can be trained and evaluated
offline from the log (``relevo ope``). Feedback events (impressions, clicks, conversions)
carrying a ``decision_id`` are joined to it as rewards.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal, Protocol

import msgspec

FeedbackKind = Literal["impression", "click", "conversion"]


class Chosen(msgspec.Struct, array_like=True, gc=False):
    """An offer served at ``position`` (0 = first), with the probability it had of being
    put first and the policy's score for it."""

    offer: str
    position: int
    probability: float
    score: float


class ShadowChoice(msgspec.Struct, gc=False):
    """What a candidate policy in shadow mode would have served (logged, not served), with its
    probabilities of putting first that offer and the offer actually served."""

    policy: str
    offer: str
    probabilities: dict[str, float]


class DecisionRecord(msgspec.Struct, kw_only=True, gc=False):
    """One decision for one placement.

    ``features`` are the flattened features the decision was made from (a categorical
    feature as ``"name=value": 1.0``, a number as ``"name": value``); hashing them again
    gives the policy's context vector. ``candidates`` are the eligible offers; ``chosen``
    lists the offers served, best first, each with the probability it had of being put first
    (what inverse propensity weighting needs). ``probabilities`` may give that probability for
    other offers too; Relevo's own decisions leave it empty to keep the log small (a
    probability for each of 50 candidates would double a record's size).
    """

    id: str
    at: datetime
    placement: str
    profile_id: str | None
    policy: str  # "priority", "pvl" or "bandit:<algorithm>"
    experiment: str | None = None
    variant: str | None = None  # the experiment's variant, or "holdout"
    features: dict[str, float] = msgspec.field(default_factory=dict)
    candidates: list[str] = msgspec.field(default_factory=list)
    probabilities: dict[str, float] = msgspec.field(default_factory=dict)
    chosen: list[Chosen] = msgspec.field(default_factory=list)
    shadow: ShadowChoice | None = None


class Feedback(msgspec.Struct, kw_only=True, gc=False):
    """An impression, click or conversion reported for an offer of a decision."""

    decision_id: str
    offer: str
    kind: FeedbackKind
    at: datetime
    placement: str = ""
    value: float = 0.0  # a conversion's revenue, when it carries one
    message_id: str = ""


class LoggedDecision(msgspec.Struct, kw_only=True, gc=False):
    """A decision with the feedback it earned, as offline evaluation reads it."""

    record: DecisionRecord
    impressions: frozenset[str] = frozenset()  # offers with an impression
    clicks: frozenset[str] = frozenset()
    conversions: frozenset[str] = frozenset()


class DecisionLogReader(Protocol):
    def logged(
        self, placement: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[LoggedDecision]:
        """The placement's decisions in time order, each with its feedback."""
        ...


# MessagePack, not JSON: a record holds a probability per candidate, and binary floats keep it
# about half the size and twice as fast to write
_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(DecisionRecord)


def encode_record(record: DecisionRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(payload: bytes) -> DecisionRecord:
    return _record_decoder.decode(payload)
