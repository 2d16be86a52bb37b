"""Prometheus metrics of the worker (served at ``/metrics`` on ``LOYALTY_WEB_PORT``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "loyalty_events",
    "Input events by topic and outcome (processed, duplicate, rerouted, deadlettered).",
    ["topic", "outcome"],
)
DEADLETTERS = Counter(
    "loyalty_deadletters", "Input messages sent to the dead-letter topic, by reason.", ["reason"]
)
POINTS = Counter(
    "loyalty_points", "Points moved by ledger reason (reversals counted as positive).", ["reason"]
)
LEDGER_ENTRIES = Counter("loyalty_ledger_entries", "Ledger entries emitted, by reason.", ["reason"])
MEMBERS_ENROLLED = Counter("loyalty_members_enrolled", "Members enrolled.")
PROCESSING_SECONDS = Histogram(
    "loyalty_event_processing_seconds",
    "Time the engine spends per input event (a batch's time divided by its size).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
LATENCY_SECONDS = Histogram(
    "loyalty_event_latency_seconds",
    "From the input message's Kafka timestamp to its outputs being handed to the producer.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHANGELOG_RECORDS_RESTORED = Counter(
    "loyalty_changelog_records_restored",
    "Table changelog records applied in batches while rebuilding local state.",
)
ORDER_WAITS_EXPIRED = Counter(
    "loyalty_order_waits_expired",
    "Waits of a member partition's records for another input topic's partition that ran out "
    "(LOYALTY_MAX_PARTITION_IDLE_MS): the records after may be out of timestamp order.",
)
ORDER_WAIT_SECONDS = Histogram(
    "loyalty_order_wait_seconds",
    "How long a member partition's records waited for another input topic's partition known "
    "to have records not received yet (applied in timestamp order).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
