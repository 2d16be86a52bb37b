"""Phase 5: scale-out: the preloaded transactions processed by one worker, then by two.

Each run is a fresh app: its own consumer group, tables, topics, and a data directory and
web port per worker, so its reward events are counted exactly. Its workers start with their
input topics empty. Once the consumer group is stable with all of them, they process the
preload's member events (so the same newsletter coupons exist as in phase 2), then a probe
sale sent to each partition (every partition's owner is ready once all have their reward
events); then the N preloaded transactions (read back from the preload's topic, into the
same partitions) are produced in one burst, and the run is timed like phase 2: N over the
first to the last reward event; its outcomes are those of phase 2. With the input already
waiting, the first worker to join would take every partition and run alone until the second
joined (the local broker has no initial rebalance delay), and the second would start later
still: that would time a rebalance, not two workers. The burst takes a few seconds of a run
of minutes (about 45,000 records/s here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace

from loyalty.bench.clients import (
    Offsets,
    OffsetWatcher,
    produce_bulk,
    read_records,
    wait_for_count,
    wait_for_group,
)
from loyalty.bench.cluster import Bench, failure
from loyalty.bench.stats import ratio
from loyalty.bench.throughput import STALL_TIMEOUT_S, ThroughputResult, measure_throughput
from loyalty.localkafka.broker import free_port
from loyalty.streams.settings import Settings

Records = list[tuple[bytes, bytes, int]]
"""(key, value, partition) as read back from the preload's topics."""

GROUP_TIMEOUT_S = 120.0
"""Longest wait for every worker of a run to join its consumer group."""


@dataclass(frozen=True)
class ScaleResult:
    one_worker: ThroughputResult
    two_workers: ThroughputResult
    ratio: float | None
    """Two workers' throughput over one worker's."""


def run_scale(bench: Bench, engine: Settings, end_offsets: Offsets) -> ScaleResult:
    """``engine``: the settings of the preload, whose transactions topic is read up to
    ``end_offsets``."""
    watcher = OffsetWatcher(bench.bootstrap)
    try:
        members_end = watcher.end_offsets(engine.topics.members)
    finally:
        watcher.close()
    members = read_records(bench.bootstrap, engine.topics.members, {}, members_end)
    transactions = read_records(bench.bootstrap, engine.topics.transactions, {}, end_offsets)
    one, two = (_run(bench, members, transactions, workers) for workers in (1, 2))
    return ScaleResult(one_worker=one, two_workers=two, ratio=ratio(two.tx_per_s, one.tx_per_s))


def _run(bench: Bench, members: Records, transactions: Records, count: int) -> ThroughputResult:
    name = f"scale-{count}"
    settings = bench.settings(name)
    workers = [
        bench.worker(
            replace(
                settings, data_dir=bench.work_dir / name / f"state-{index}", web_port=free_port()
            )
        )
        for index in range(1, count + 1)
    ]

    def alive() -> bool:
        return all(worker.alive for worker in workers)

    def feed() -> None:
        asyncio.run(produce_bulk(bench.bootstrap, settings.topics.transactions, transactions))

    try:
        for worker in workers:
            worker.start()
        try:
            wait_for_group(bench.bootstrap, settings.app_id, count, GROUP_TIMEOUT_S, alive)
            _process(bench, settings, members, alive)
            bench.wait_all_partitions(settings, alive)
        except (RuntimeError, TimeoutError) as error:
            raise failure(error, workers) from None
        return measure_throughput(bench, workers, len(transactions), name, feed)
    finally:
        for worker in workers:
            worker.stop()


def _process(bench: Bench, settings: Settings, members: Records, alive: Callable[[], bool]) -> None:
    """Produce the preload's member events and wait for their reward events."""
    rewards = settings.topics.rewards
    watcher = OffsetWatcher(bench.bootstrap)
    try:
        start = {rewards: watcher.end_offsets(rewards)}
        asyncio.run(produce_bulk(bench.bootstrap, settings.topics.members, members))
        wait_for_count(watcher, start, len(members), STALL_TIMEOUT_S, alive=alive, what="members")
    finally:
        watcher.close()
