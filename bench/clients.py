"""Kafka helpers of the benchmark: bulk producing, end offsets, boundary records, topics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

Offsets = dict[int, int]
"""partition -> offset"""

_IN_FLIGHT = 20_000
"""Sends awaited together when bulk producing: bounds the memory held by pending futures."""


def create_topic(bootstrap: str, name: str, partitions: int, compacted: bool = False) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="loyalty-bench-admin")
    try:
        configs = {"cleanup.policy": "compact"} if compacted else {}
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


async def produce_bulk(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes, int | None]],
) -> int:
    """Send (key, value, partition or None for the default murmur2 partitioner) records in
    big batches; return the count once all are acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        acks=1,
    )
    await producer.start()
    count = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value, partition in records:
            pending.append(await producer.send(topic, value=value, key=key, partition=partition))
            count += 1
            if len(pending) >= _IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


def produce_values(bootstrap: str, topic: str, values: Iterable[dict[str, Any]]) -> int:
    """Send JSON objects keyed by their ``member_id`` (default partitioner)."""
    records = ((value["member_id"].encode(), orjson.dumps(value), None) for value in values)
    return asyncio.run(produce_bulk(bootstrap, topic, records))


def send_one(bootstrap: str, topic: str, value: dict[str, Any]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send(topic, key=value["member_id"].encode(), value=orjson.dumps(value))
        producer.flush()
    finally:
        producer.close()


class OffsetWatcher:
    """End offsets of topics, read on demand: cheap enough to poll a few times a second."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )

    def partitions(self, topic: str, timeout: float = 30.0) -> list[int]:
        """The topic's partitions, once its metadata is known (a topic created a moment ago
        has none yet)."""
        deadline = time.monotonic() + timeout
        while True:
            partitions = self.consumer.partitions_for_topic(topic)
            if partitions:
                return sorted(partitions)
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no partitions after {timeout:.0f}s")
            self.consumer.topics()  # refreshes the metadata
            time.sleep(0.1)  # polling with a deadline

    def end_offsets(self, topic: str) -> Offsets:
        tps = [TopicPartition(topic, partition) for partition in self.partitions(topic)]
        return {tp.partition: offset for tp, offset in self.consumer.end_offsets(tps).items()}

    def close(self) -> None:
        self.consumer.close()


def count_since(start: Offsets, end: Offsets) -> int:
    """Records appended between two end-offset snapshots of the same topic."""
    return sum(offset - start.get(partition, 0) for partition, offset in end.items())


def wait_for_count(
    watcher: OffsetWatcher,
    topics_start: dict[str, Offsets],
    target: int,
    stall_timeout: float,
    interval: float = 0.5,
    alive: Callable[[], bool] | None = None,
    what: str = "outputs",
) -> dict[str, Offsets]:
    """Poll end offsets every ``interval`` s until the records appended to the topics since
    ``topics_start`` reach ``target``; fail when nothing new arrives for ``stall_timeout`` s.
    Returns the end offsets that met the target."""
    progress, last_change = -1, time.monotonic()
    while True:
        ends = {topic: watcher.end_offsets(topic) for topic in topics_start}
        seen = sum(count_since(topics_start[topic], ends[topic]) for topic in topics_start)
        if seen >= target:
            return ends
        now = time.monotonic()
        if seen != progress:
            progress, last_change = seen, now
        elif now - last_change > stall_timeout:
            raise TimeoutError(f"{what}: {seen} of {target} after {stall_timeout:.0f}s stalled")
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: the process died at {seen} of {target}")
        time.sleep(interval)  # sparse polling: the worker needs the CPU


def boundary_timestamps(
    bootstrap: str, topic: str, start: Offsets, end: Offsets
) -> tuple[int, int]:
    """(earliest, latest) record timestamp in ms among the records between two snapshots:
    reads only the first and the last record of each partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    firsts: list[int] = []
    lasts: list[int] = []
    try:
        for partition, end_offset in end.items():
            begin = start.get(partition, 0)
            if end_offset <= begin:
                continue
            tp = TopicPartition(topic, partition)
            firsts.append(_record_at(consumer, tp, begin).timestamp)
            lasts.append(_record_at(consumer, tp, end_offset - 1).timestamp)
    finally:
        consumer.close()
    if not firsts:
        raise ValueError(f"no records in {topic} between the snapshots")
    return min(firsts), max(lasts)


def _record_at(consumer: KafkaConsumer, tp: TopicPartition, offset: int) -> Any:
    consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=500).get(tp, []):
            if record.offset >= offset:
                return record
    raise TimeoutError(f"record {tp.topic}[{tp.partition}]@{offset} not readable")


def read_values(bootstrap: str, topic: str, start: Offsets, end: Offsets) -> list[dict[str, Any]]:
    """Every value (JSON objects) between two end-offset snapshots."""
    return [orjson.loads(value) for _, value, _ in read_records(bootstrap, topic, start, end)]


def read_records(
    bootstrap: str, topic: str, start: Offsets, end: Offsets
) -> list[tuple[bytes, bytes, int]]:
    """Every (key, value, partition) between two end-offset snapshots, as
    :func:`produce_bulk` takes them."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    found: list[tuple[bytes, bytes, int]] = []
    try:
        tps = [TopicPartition(topic, partition) for partition in end]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp.partition, 0))
        remaining = {tp for tp in tps if end[tp.partition] > start.get(tp.partition, 0)}
        deadline = time.monotonic() + 60 + count_since(start, end) / 5_000
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < end[tp.partition]:
                        found.append((record.key, record.value, tp.partition))
                if consumer.position(tp) >= end[tp.partition]:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"could not read {topic} up to {end}")
    finally:
        consumer.close()
    return found


def wait_for_group(
    bootstrap: str, group: str, members: int, timeout: float, alive: Callable[[], bool]
) -> None:
    """Block until the consumer group ``group`` is stable with ``members`` members (every
    member has its partitions); raise when ``alive()`` turns false or after ``timeout`` s."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="loyalty-bench-admin")
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = admin.describe_groups([group])[group]
            joined = len(found.get("members") or ())
            if found.get("group_state") == "Stable" and joined == members:
                return
            if not alive():
                raise RuntimeError(f"a member of {group} died ({joined} of {members} joined)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group}: {joined} of {members} after {timeout:.0f}s")
            time.sleep(0.2)  # polling with a deadline
    finally:
        admin.close()


class RewardWaiter:
    """Waits for the reward event of given source event ids, reading from a snapshot."""

    def __init__(self, bootstrap: str, topic: str, start: Offsets) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        tps = [TopicPartition(topic, partition) for partition in start]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, start[tp.partition])

    def wait(self, source_event_id: str, timeout: float, alive: Callable[[], bool]) -> float:
        """Block until the reward of ``source_event_id`` is read; return ``time.monotonic()``
        at that moment."""
        wanted = source_event_id.encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=100).values():
                for record in records:
                    # A cheap pre-filter, then the exact check.
                    if (
                        wanted in record.value
                        and orjson.loads(record.value).get("source_event_id") == source_event_id
                    ):
                        return time.monotonic()
            if not alive():
                raise RuntimeError(f"worker died before processing {source_event_id}")
        raise TimeoutError(f"no reward event for {source_event_id} within {timeout:.0f}s")

    def close(self) -> None:
        self.consumer.close()
