"""Phase 4: the raw-client baseline on the same machine, topic and messages.

A plain aiokafka loop in a consumer group of its own reads the N preloaded transactions,
parses each value with orjson and produces one small message per input to a scratch
topic, with the engine's producer settings (acks=all, default batching). No worker runs
meanwhile. Throughput is N over the time from the first input read to the last output
(the Kafka timestamp of the last record on the scratch topic). The Faust floor phase
(:mod:`bench.faust_floor`) does the same work through a Faust agent and is timed alike.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from loyalty.bench.clients import Offsets, OffsetWatcher, boundary_timestamps, create_topic
from loyalty.bench.stats import rate
from loyalty.streams.settings import Settings

STALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BaselineResult:
    """The figures of the baseline, and of the Faust floor (timed alike)."""

    messages: int
    seconds: float
    """First input read to last output."""
    msg_per_s: float


def run_baseline(bootstrap: str, settings: Settings, stop: Offsets) -> BaselineResult:
    """Consume the transactions topic up to the ``stop`` end offsets (the preload)."""
    scratch = f"{settings.app_id}.bench.baseline"
    create_topic(bootstrap, scratch, settings.partitions)
    count, first_input = asyncio.run(
        _loop(bootstrap, settings.topics.transactions, stop, scratch, f"{settings.app_id}-baseline")
    )
    return timed_to_last_output(bootstrap, scratch, count, first_input)


def scratch_value(transaction: bytes) -> bytes:
    """The work done per input: parse the transaction, encode a small output from it."""
    event = orjson.loads(transaction)
    output = {
        "transaction_id": event["transaction_id"],
        "member_id": event["member_id"],
        "liters": event["liters"],
    }
    return orjson.dumps(output)


def timed_to_last_output(
    bootstrap: str, scratch: str, count: int, first_input: float
) -> BaselineResult:
    """``count`` messages over the time from ``first_input`` (wall time, s) to the Kafka
    timestamp of the last record on the ``scratch`` topic (its only writer has finished)."""
    watcher = OffsetWatcher(bootstrap)
    try:
        end = watcher.end_offsets(scratch)
    finally:
        watcher.close()
    _, last_output_ms = boundary_timestamps(bootstrap, scratch, {}, end)
    seconds = last_output_ms / 1000 - first_input
    return BaselineResult(messages=count, seconds=round(seconds, 3), msg_per_s=rate(count, seconds))


async def _loop(
    bootstrap: str, source: str, stop: Offsets, scratch: str, group_id: str
) -> tuple[int, float]:
    """Returns the message count and the wall time the first input was read."""
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group_id, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    remaining = {partition for partition, end in stop.items() if end > 0}
    count, first_input = 0, 0.0
    last_progress = time.monotonic()
    try:
        while remaining:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches and time.monotonic() - last_progress > STALL_TIMEOUT_S:
                raise TimeoutError(f"baseline stalled after {count} messages")
            for tp, records in batches.items():
                end = stop.get(tp.partition, 0)
                for record in records:
                    if record.offset >= end:
                        break
                    if not first_input:
                        first_input = time.time()
                    value = scratch_value(record.value)
                    await producer.send(scratch, key=record.key, value=value)
                    count += 1
                if records and records[-1].offset >= end - 1:
                    remaining.discard(tp.partition)
                last_progress = time.monotonic()
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    return count, first_input
