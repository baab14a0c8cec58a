"""The learner: turns joined feedback into policy updates, online.

The processor records each decision's first impression, click and conversion (``feedback``)
in its own transaction. The learner reads them in order, finds the decision they belong to
(its placement, features and policy) and updates the placement's models:

- a trial is counted once, by the first of its impression or its reward event (a click, or a
  conversion when the placement rewards conversions): ``learn_one`` with reward 0 for an
  impression, with the reward for a reward event that came first; a reward after the
  impression adds to the trial already counted (``add_reward``);
- the bandit learns from the decisions it made (on-policy); the propensity model and the
  shadow bandit learn from every decision of the placement.

States are saved with the learner's cursor in one transaction (so a restart neither loses nor
repeats an update), at most every ``save_every`` seconds; decide nodes reload them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from relevo._clock import Clock
from relevo.decisions.catalog import Catalog, Placement
from relevo.decisions.log import DecisionRecord, Feedback
from relevo.decisions.models import ModelRegistry, Role, model_name
from relevo.learning.policy import Vector
from relevo.store.base import DecisionStore, TransactionConflict

log = logging.getLogger(__name__)

BATCH = 1000
IDLE_SECONDS = 0.05
SAVE_EVERY = timedelta(seconds=0.2)
# decisions are logged a few milliseconds after they are answered: feedback this recent whose
# decision is not in the log yet waits for it; older feedback of an unknown decision is skipped
RECORD_GRACE = timedelta(seconds=10)


class _Learns(Protocol):
    def learn_one(self, context: Vector, action: str, reward: float) -> None: ...
    def add_reward(self, context: Vector, action: str, reward: float) -> None: ...


class Learner:
    def __init__(self, store: DecisionStore, catalog: Callable[[], Catalog], clock: Clock) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock
        self._models = ModelRegistry()
        self._cursor = 0
        self._dirty: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        self._cursor = self._store.learner_cursor()
        for stored in self._store.load_policies():
            self._models.install(stored, reseed=False)

    def start(self) -> None:
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relevo-learner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                learnt = self.run_once()
            except Exception:  # thread boundary: log, back off, try again
                log.exception("learning from feedback failed")
                self._stop.wait(1.0)
                continue
            if learnt < BATCH:
                self._stop.wait(max(IDLE_SECONDS, SAVE_EVERY.total_seconds() if learnt else 0))

    def run_once(self) -> int:
        """Learn from the next batch of feedback and save; returns the rows read."""
        rows = self._store.feedback_after(self._cursor, BATCH)
        if not rows:
            return 0
        decision_ids = list({f.decision_id for _, f in rows})
        records = self._store.decision_records(decision_ids)
        earlier = self._store.feedback_of(decision_ids)
        catalog = self._catalog()
        now = self._clock.now()
        cursor = self._cursor
        for seq, feedback in rows:
            record = records.get(feedback.decision_id)
            if record is None and now - feedback.at < RECORD_GRACE:
                break  # its decision is still on its way to the decision log: wait for it
            cursor = seq
            placement = catalog.placements.get(record.placement) if record else None
            if record is None or placement is None:
                continue  # an unknown decision, or a placement since removed
            counted = any(
                s < seq and f.offer == feedback.offer and f.kind in _trial_kinds(placement)
                for s, f in earlier
                if f.decision_id == feedback.decision_id
            )
            self._learn(placement, record, feedback, counted)
        if cursor == self._cursor:
            return 0
        try:
            self._store.save_policies(
                self._models.states(self._dirty), cursor, now, expected=self._cursor
            )
        except TransactionConflict:
            # another learner (a worker that took the role over) saved meanwhile: start again
            # from what it stored, so no feedback is learnt twice
            log.info("another learner moved the feedback cursor; reloading")
            self._models = ModelRegistry()
            self.load()
            self._dirty.clear()
            return 0
        self._cursor = cursor
        self._dirty.clear()
        return len(rows)

    def _learn(
        self, placement: Placement, record: DecisionRecord, feedback: Feedback, counted: bool
    ) -> None:
        trial_kinds = _trial_kinds(placement)
        if feedback.kind not in trial_kinds or feedback.offer not in record.candidates:
            return
        reward = 0.0 if feedback.kind == "impression" else 1.0
        context = placement.hasher.transform(record.features)
        definition = placement.definition
        targets: list[tuple[Role, _Learns]] = [
            ("propensity", self._models.propensity(placement)),
        ]
        if definition.shadow is not None:
            targets.append(("shadow", self._models.shadow(placement)))
        if record.policy == f"bandit:{definition.bandit.algorithm}":
            targets.append(("bandit", self._models.policy(placement)))
        prior = self._prior(placement, feedback.offer)
        for role, model in targets:
            # the propensity model learns the offset from the offer's prior propensity
            base = -prior if role == "propensity" else 0.0
            if counted:
                if reward:
                    model.add_reward(context, feedback.offer, reward)
            else:
                model.learn_one(context, feedback.offer, base + reward)
            self._dirty.add(model_name(placement, role))

    def _prior(self, placement: Placement, offer_id: str) -> float:
        offer = self._catalog().offers.get(offer_id)
        return offer.definition.propensity if offer else 0.0


def _trial_kinds(placement: Placement) -> tuple[str, str]:
    return ("impression", placement.definition.reward)
