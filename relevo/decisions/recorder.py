"""The decision log writer: decisions are appended in batches from a background thread.

A decision is answered first and logged just after: the decide path only appends to an
in-memory queue (no lock, no thread woken per decision), and a background thread writes what
has gathered every ``INTERVAL_SECONDS`` in one transaction. ``flush`` writes what was recorded
before it; ``close`` stops the thread and writes the rest.
"""

from __future__ import annotations

import collections
import logging
import threading

from relevo.decisions.log import DecisionRecord
from relevo.store.base import DecisionStore

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.25
BATCH = 5000


class DecisionRecorder:
    def __init__(self, store: DecisionStore) -> None:
        self._store = store
        self._queue: collections.deque[DecisionRecord] = collections.deque()
        self._writing = threading.Lock()  # one writer at a time: flush waits for the thread's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, record: DecisionRecord) -> None:
        self._queue.append(record)  # thread-safe, and wakes nobody

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="relevo-decision-log", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Return once every decision recorded before the call is written."""
        while self._write():
            pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_SECONDS):
            while self._write() == BATCH:
                pass

    def _write(self) -> int:
        """Write up to ``BATCH`` queued decisions; how many were taken."""
        with self._writing:
            batch: list[DecisionRecord] = []
            queue = self._queue
            while queue and len(batch) < BATCH:
                batch.append(queue.popleft())
            if batch:
                try:
                    self._store.append_decisions(batch)
                except Exception:  # thread boundary: a lost batch is logged, the node goes on
                    log.exception("could not write %d decisions to the decision log", len(batch))
            return len(batch)
