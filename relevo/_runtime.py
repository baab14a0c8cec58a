"""Process-wide settings for a long-running server: the garbage collector and the GIL.

A server keeps many long-lived objects (profiles in the processor's memo, definitions), so the
default thresholds run full collections, which pause every thread, far too often. Collect the
young generation less often, and move what start-up allocated out of the collector's sight.

The event loop shares the GIL with the node's background threads (the processor, the log
writers, the learner). When one of them holds it, a request that arrives waits until the
holder gives it up, at most one switch interval. Python's default, 5 ms, is the whole decide
latency budget; 1 ms keeps a busy processor from adding more than that to a request.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 100)
SWITCH_INTERVAL_SECONDS = 0.001


def tune_for_server() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
