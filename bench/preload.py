"""Phase 1: newsletter coupons issued by the engine, then N transactions preloaded.

Coupons only exist once the engine has processed a ``newsletter_subscribed`` event, so a
worker first processes the member events (signup + newsletter for ~5% of members) and the
codes are read from their reward events. The worker is then stopped, and the transactions
are produced in big batches while no worker runs: the throughput phase finds them all
waiting. This phase is not timed against the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from loyalty.bench.clients import (
    Offsets,
    OffsetWatcher,
    produce_bulk,
    produce_values,
    read_values,
    wait_for_count,
)
from loyalty.bench.cluster import Bench
from loyalty.bench.options import BenchOptions
from loyalty.bench.stats import rate
from loyalty.bench.workload import (
    Mix,
    TransactionGenerator,
    member_events,
    member_ids,
    newsletter_members,
)
from loyalty.streams.settings import Settings

EVENT_TIME_SPAN = timedelta(days=20)
"""The preloaded transactions happen over the last 20 days (coupons are valid for 30)."""


@dataclass(frozen=True)
class PreloadResult:
    transactions: int
    members: int
    member_events: int
    coupons_issued: int
    mix: dict[str, int]
    """Counts by kind: sale, refund, over_threshold, heavy, coupon_own, coupon_reused,
    coupon_foreign, coupon_made_up."""
    produce_seconds: float
    produce_per_s: float


@dataclass
class Preloaded:
    result: PreloadResult
    generator: TransactionGenerator
    """Continues the same workload (the latency phase uses it)."""
    end_offsets: Offsets
    """End offsets of the transactions topic right after the preload."""


def run_preload(bench: Bench, options: BenchOptions, settings: Settings) -> Preloaded:
    topics = settings.topics
    mix = Mix()
    members = member_ids(options.members)
    run_id = settings.app_id.rsplit("-", 1)[-1]
    now = datetime.now(UTC)
    first_sale_at = now - EVENT_TIME_SPAN
    events = member_events(
        newsletter_members(members, mix.newsletter_share), first_sale_at - timedelta(days=1), run_id
    )

    watcher = OffsetWatcher(bench.bootstrap)
    try:
        start = {topics.rewards: watcher.end_offsets(topics.rewards)}
        start[topics.deadletter] = watcher.end_offsets(topics.deadletter)
        produce_values(bench.bootstrap, topics.members, events)
        worker = bench.worker(settings)
        worker.start()
        try:
            ends = wait_for_count(
                watcher, start, len(events), 120, alive=lambda: worker.alive, what="member events"
            )
            bench.record_memory("preload", worker)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}; worker log tail:\n{worker.log_tail()}") from None
        finally:
            worker.stop()
        rewards = read_values(
            bench.bootstrap, topics.rewards, start[topics.rewards], ends[topics.rewards]
        )
        coupons = {
            reward["member_id"]: reward["coupon_issued"]["code"]
            for reward in rewards
            if reward.get("coupon_issued")
        }

        generator = TransactionGenerator(members, coupons, run_id, options.seed, mix)
        started = time.monotonic()
        count = asyncio.run(
            produce_bulk(
                bench.bootstrap,
                topics.transactions,
                _records(generator, options.transactions, first_sale_at, now),
            )
        )
        seconds = time.monotonic() - started
        end_offsets = watcher.end_offsets(topics.transactions)
    finally:
        watcher.close()
    result = PreloadResult(
        transactions=count,
        members=len(members),
        member_events=len(events),
        coupons_issued=len(coupons),
        mix=dict(sorted(generator.counts.items())),
        produce_seconds=round(seconds, 2),
        produce_per_s=rate(count, seconds),
    )
    return Preloaded(result, generator, end_offsets)


def _records(
    generator: TransactionGenerator, count: int, first: datetime, last: datetime
) -> Iterator[tuple[bytes, bytes, None]]:
    step = (last - first) / count
    for index in range(count):
        transaction = generator.next(first + step * index)
        yield transaction["member_id"].encode(), orjson.dumps(transaction), None
