"""Phase 5: recovery of a worker's member table, cold and warm.

Each timing is from the worker process start to the reward event of a probe sale sent
right after the start (the worker processes nothing before its table is recovered).

- empty: a fresh worker with an empty changelog (the start-up cost alone);
- cold: ``recovery_members`` member states produced straight into the table's changelog
  topic, then a fresh worker with an empty data directory rebuilds the table;
- warm: that worker stopped with SIGTERM and started again with its RocksDB state intact.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from loyalty.bench.clients import produce_bulk
from loyalty.bench.cluster import Bench, Memory
from loyalty.schemas.state import MemberState, encode_state
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.topics import changelog_topic_name

ENROLLED_AT = "2026-01-15T08:30:00+00:00"


@dataclass(frozen=True)
class RecoveryResult:
    members: int
    changelog_produce_seconds: float
    empty_start_s: float
    """Worker start to the probe's reward event, empty table."""
    cold_start_s: float
    """The same with ``members`` members to rebuild from the changelog."""
    cold_rebuild_s: float
    """``cold_start_s - empty_start_s``: the rebuild alone."""
    cold_s_per_million: float | None
    warm_restart_s: float
    """Worker start to the probe's reward event, local RocksDB state intact."""
    memory_cold: Memory
    memory_warm: Memory


def changelog_records(
    members: int, partitions: int, seed: int
) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, encoded state, partition) of ``members`` enrolled members with a balance."""
    rng = random.Random(seed)
    for index in range(members):
        key = f"member-{index:07d}".encode()
        state = MemberState(
            balance=rng.randrange(0, 5000), enrolled_at=ENROLLED_AT, welcome_given=True
        )
        yield key, encode_state(state), owner_partition(key, partitions)


def run_recovery(bench: Bench, members: int, seed: int) -> RecoveryResult:
    settings = bench.settings("recovery")
    state_dir = bench.work_dir / "recovery"

    empty = bench.worker(settings, data_dir=state_dir / "empty-state")
    try:
        empty_s = bench.time_to_probe(empty)
        bench.record_memory("recovery-empty", empty)
    finally:
        empty.stop()

    changelog = changelog_topic_name(settings.app_id, "member_to_state")
    started = time.monotonic()
    asyncio.run(
        produce_bulk(
            bench.bootstrap, changelog, changelog_records(members, settings.partitions, seed)
        )
    )
    produce_seconds = time.monotonic() - started

    cold = bench.worker(settings, data_dir=state_dir / "cold-state")
    try:
        cold_s = bench.time_to_probe(cold)
        memory_cold = bench.record_memory("recovery-cold", cold)
    finally:
        cold.stop()

    warm = bench.worker(settings, data_dir=state_dir / "cold-state")
    try:
        warm_s = bench.time_to_probe(warm)
        memory_warm = bench.record_memory("recovery-warm", warm)
    finally:
        warm.stop()

    rebuild_s = max(0.0, cold_s - empty_s)
    return RecoveryResult(
        members=members,
        changelog_produce_seconds=round(produce_seconds, 2),
        empty_start_s=round(empty_s, 3),
        cold_start_s=round(cold_s, 3),
        cold_rebuild_s=round(rebuild_s, 3),
        cold_s_per_million=round(rebuild_s * 1_000_000 / members, 2) if members else None,
        warm_restart_s=round(warm_s, 3),
        memory_cold=memory_cold,
        memory_warm=memory_warm,
    )
