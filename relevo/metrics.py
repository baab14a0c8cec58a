"""Prometheus metrics, on a registry of their own per app (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_accepted = Counter(
            "relevo_events_accepted", "Events durably accepted by collect.", ["source"], registry=r
        )
        self.events_rejected = Counter(
            "relevo_events_rejected",
            "Events or requests rejected by collect.",
            ["reason"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "relevo_events_duplicate",
            "Events dropped as duplicates of (source, messageId).",
            registry=r,
        )
        self.events_duplicate_conflict = Counter(
            "relevo_events_duplicate_conflict",
            "Duplicates whose payload differed from the first event with that messageId.",
            registry=r,
        )
        self.collect_throttled = Counter(
            "relevo_collect_throttled",
            "Requests answered 429 because the log was behind.",
            registry=r,
        )
        self.events_processed = Counter(
            "relevo_events_processed", "Events applied to profiles by the processor.", registry=r
        )
        self.events_suppressed = Counter(
            "relevo_events_suppressed",
            "Events dropped because their person was erased.",
            registry=r,
        )
        self.events_failed = Counter(
            "relevo_events_failed",
            "Events the processor could not apply (see failed_events).",
            registry=r,
        )
        self.identity_merges = Counter(
            "relevo_identity_merges", "Profile merges, by outcome.", ["outcome"], registry=r
        )
        self.segment_changes = Counter(
            "relevo_segment_changes",
            "Segment memberships entered or exited.",
            ["change"],
            registry=r,
        )
        self.deliveries = Counter(
            "relevo_deliveries",
            "Destination deliveries by outcome (delivered, retried, failed, no_consent).",
            ["destination", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "relevo_delivery_latency_seconds",
            "From the effect (segment change, event) to its successful delivery.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.processing_lag = Gauge(
            "relevo_processing_lag_events",
            "Events in the log not yet applied to profiles.",
            registry=r,
        )
        self.request_duration = Histogram(
            "relevo_http_request_duration_seconds",
            "HTTP request latency.",
            ["route", "method", "status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
