"""Phase 2: sustained throughput of one worker over the preloaded transactions.

The worker starts with all N transactions waiting. Throughput is N over the time from its
first output to its last one (the Kafka timestamps of the first and last reward events:
exactly one reward event per input). Progress is watched through end offsets twice a
second, so the measuring side takes next to no CPU from the worker. The scale-out phase
times its runs of one and two workers the same way (:func:`measure_throughput`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loyalty.bench.clients import (
    OffsetWatcher,
    boundary_timestamps,
    count_since,
    read_values,
    wait_for_count,
)
from loyalty.bench.cluster import Bench, BenchWorker, failure
from loyalty.bench.stats import rate
from loyalty.streams.settings import Settings

STALL_TIMEOUT_S = 120.0
"""Give up when no output appears for this long (covers the worker's start)."""


@dataclass(frozen=True)
class ThroughputResult:
    transactions: int
    reward_events: int
    dead_letters: int
    seconds: float
    """First output to last output."""
    tx_per_s: float
    start_to_last_output_s: float
    """From the worker process start (includes its start-up) to the last output; in the
    scale-out phase, whose workers are ready first, from the start of the input burst."""
    outcomes: dict[str, int]
    """What the engine made of the mix, counted on its reward events (read after the
    timed window): source types, coupon statuses, tier changes, missions, enrolments."""


def outcome_counts(rewards: list[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for reward in rewards:
        counts[reward["source_type"]] += 1
        counts.update(f"coupon:{coupon['status']}" for coupon in reward.get("coupons") or ())
        change = reward.get("tier_change")
        if change:
            counts[f"tier:{change['to']}"] += 1
        counts["missions"] += len(reward.get("missions") or ())
        counts["enrolled"] += bool(reward.get("enrolled"))
    return dict(sorted(counts.items()))


def run_throughput(
    bench: Bench, settings: Settings, transactions: int
) -> tuple[ThroughputResult, BenchWorker]:
    """Returns the result and the worker, still running (the latency phase uses it)."""
    worker = bench.worker(settings)
    return measure_throughput(bench, [worker], transactions, "throughput"), worker


def measure_throughput(
    bench: Bench,
    workers: list[BenchWorker],
    transactions: int,
    phase: str,
    feed: Callable[[], object] | None = None,
) -> ThroughputResult:
    """Time the ``transactions`` reward events of ``workers`` (one app). Without ``feed``
    the input is already waiting and the workers are started here; with it they already run,
    ready, and ``feed()`` produces the input. The workers are left running (stopped when the
    measure fails)."""
    topics = workers[0].settings.topics
    watcher = OffsetWatcher(bench.bootstrap)
    try:
        start = {
            topics.rewards: watcher.end_offsets(topics.rewards),
            topics.deadletter: watcher.end_offsets(topics.deadletter),
        }
        started_wall = time.time()
        try:
            if feed is None:
                for worker in workers:
                    worker.start()
            else:
                feed()
            ends = wait_for_count(
                watcher,
                start,
                transactions,
                STALL_TIMEOUT_S,
                alive=lambda: all(worker.alive for worker in workers),
                what="reward events",
            )
        except (RuntimeError, TimeoutError) as error:
            for worker in workers:
                worker.stop()
            raise failure(error, workers) from None
    finally:
        watcher.close()
    for index, worker in enumerate(workers, 1):
        bench.record_memory(phase if len(workers) == 1 else f"{phase}.{index}", worker)
    rewards = count_since(start[topics.rewards], ends[topics.rewards])
    dead_letters = count_since(start[topics.deadletter], ends[topics.deadletter])
    first_ms, last_ms = boundary_timestamps(
        bench.bootstrap, topics.rewards, start[topics.rewards], ends[topics.rewards]
    )
    seconds = (last_ms - first_ms) / 1000
    rewards_read = read_values(
        bench.bootstrap, topics.rewards, start[topics.rewards], ends[topics.rewards]
    )
    return ThroughputResult(
        transactions=transactions,
        reward_events=rewards,
        dead_letters=dead_letters,
        seconds=round(seconds, 3),
        tx_per_s=rate(transactions, seconds),
        start_to_last_output_s=round(last_ms / 1000 - started_wall, 3),
        outcomes=outcome_counts(rewards_read),
    )
