"""Phase 3: end-to-end latency at fixed offered loads.

A paced producer sends the workload at a fixed rate for a fixed time, stamping each
transaction's send time (also in the value, as ``bench_sent_at``: the engine ignores
unknown fields). A consumer in the same event loop reads the reward events; the latency of
a transaction is the time its reward event is read minus its send time. When the engine
cannot keep up, the backlog drains after the send window and the latencies show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from loyalty.bench.clients import Offsets, OffsetWatcher
from loyalty.bench.stats import LatencySummary, rate, summarize
from loyalty.bench.workload import TransactionGenerator
from loyalty.streams.settings import Settings

PACING_INTERVAL_S = 0.002


@dataclass(frozen=True)
class LoadResult:
    offered_per_s: int
    seconds: float
    sent: int
    achieved_per_s: float
    """Sent over the actual send window."""
    observed: int
    missing: int
    """Sent transactions whose reward event was not read before the drain deadline."""
    drain_seconds: float
    """From the end of the send window to the last reward event read."""
    latency: LatencySummary | None


def run_load(
    bootstrap: str,
    settings: Settings,
    generator: TransactionGenerator,
    offered_per_s: int,
    seconds: float,
    drain_timeout: float,
) -> LoadResult:
    watcher = OffsetWatcher(bootstrap)
    try:
        start = watcher.end_offsets(settings.topics.rewards)
    finally:
        watcher.close()
    return asyncio.run(
        _run_load(bootstrap, settings, generator, start, offered_per_s, seconds, drain_timeout)
    )


async def _run_load(
    bootstrap: str,
    settings: Settings,
    generator: TransactionGenerator,
    rewards_start: Offsets,
    offered_per_s: int,
    seconds: float,
    drain_timeout: float,
) -> LoadResult:
    topics = settings.topics
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await producer.start()
    await consumer.start()
    partitions = [TopicPartition(topics.rewards, partition) for partition in rewards_start]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, rewards_start[tp.partition])

    pending: dict[str, float] = {}
    """transaction_id -> send time, until its reward event is read."""
    latencies: list[float] = []
    last_observed = 0.0
    sending_done = asyncio.Event()

    async def observe() -> None:
        nonlocal last_observed
        while not (sending_done.is_set() and not pending):
            batches = await consumer.getmany(timeout_ms=100)
            observed = time.time()
            for records in batches.values():
                for record in records:
                    source = orjson.loads(record.value).get("source_event_id")
                    sent_at = pending.pop(source, None)
                    if sent_at is not None:
                        latencies.append(observed - sent_at)
                        last_observed = observed

    observer = asyncio.create_task(observe())
    total = round(offered_per_s * seconds)
    sent = 0
    try:
        began = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - began) * offered_per_s) + 1)
            while sent < due:
                transaction = generator.next(datetime.now(UTC))
                sent_at = time.time()
                transaction["bench_sent_at"] = sent_at
                pending[transaction["transaction_id"]] = sent_at
                await producer.send(
                    topics.transactions,
                    key=transaction["member_id"].encode(),
                    value=orjson.dumps(transaction),
                )
                sent += 1
            await asyncio.sleep(PACING_INTERVAL_S)  # pacing the producer
        await producer.flush()
        send_seconds = time.monotonic() - began
        send_ended = time.time()
        sending_done.set()
        with contextlib.suppress(TimeoutError):  # what was not observed is reported missing
            await asyncio.wait_for(observer, drain_timeout)
    finally:
        observer.cancel()
        await producer.stop()
        await consumer.stop()
    return LoadResult(
        offered_per_s=offered_per_s,
        seconds=round(send_seconds, 3),
        sent=sent,
        achieved_per_s=rate(sent, send_seconds),
        observed=len(latencies),
        missing=len(pending),
        drain_seconds=round(max(0.0, last_observed - send_ended), 3),
        latency=summarize(latencies),
    )
