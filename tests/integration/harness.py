"""Helpers of the integration tests: isolated settings, a producer, a topic reader, HTTP
requests to workers, and waiting for the consumer group."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from loyalty.demo.worker_process import WorkerProcess
from loyalty.localkafka.broker import free_port
from loyalty.streams.settings import Settings, TopicNames


def isolated_settings(bootstrap: str, tmp_path: Path, partitions: int = 4) -> Settings:
    """Settings whose topics, consumer group and state belong to one test only."""
    run = f"t{uuid.uuid4().hex[:8]}"
    defaults = TopicNames()
    topics = TopicNames(
        **{name: f"{run}.{getattr(defaults, name)}" for name in TopicNames.__dataclass_fields__}
    )
    return Settings(
        kafka_bootstrap=bootstrap,
        data_dir=tmp_path / "state",
        web_port=free_port(),
        app_id=f"loyalty-{run}",
        partitions=partitions,
        topics=topics,
        log_level="info",
        daily_cron="",  # tests drive the daily jobs themselves, by date
        # The workers of a test share it, so they forward member requests to each other.
        peer_token=secrets.token_hex(32),
    )


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send (key, value) pairs with the default (murmur2) partitioner; return the count."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    count = 0
    for key, value in messages:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


class TopicReader:
    """Reads topics from the beginning and keeps every record, in partition order."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_bytes=8 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.records: dict[str, list[Any]] = {topic: [] for topic in topics}

    def poll(self) -> None:
        for batch in self.consumer.poll(timeout_ms=200).values():
            for record in batch:
                self.records[record.topic].append(record)

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(record.value) for record in self.records[topic]]

    def wait_for(self, condition: Callable[[TopicReader], bool], timeout: float, what: str) -> None:
        """Poll until ``condition(self)`` holds; fail with ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                counts = {topic: len(items) for topic, items in self.records.items()}
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; {counts}")
            self.poll()

    def wait_for_members(self, topic: str, members: int, timeout: float, what: str) -> None:
        """Poll until ``topic`` has records of ``members`` distinct members."""
        self.wait_for(
            lambda r: len({value["member_id"] for value in r.values(topic)}) >= members,
            timeout,
            what,
        )

    def wait_for_end(self, timeout: float) -> None:
        """Poll until every partition of the topics is read up to its end offset of now."""
        consumer = self.consumer
        partitions = [
            TopicPartition(topic, partition)
            for topic in self.records
            for partition in consumer.partitions_for_topic(topic) or ()
        ]
        ends = consumer.end_offsets(partitions)

        def at_end(reader: TopicReader) -> bool:
            assigned = consumer.assignment()
            return all(tp in assigned and consumer.position(tp) >= end for tp, end in ends.items())

        self.wait_for(at_end, timeout, "the end of " + ", ".join(self.records))

    def close(self) -> None:
        self.consumer.close()


def distinct(values: list[dict[str, Any]], id_field: str) -> list[dict[str, Any]]:
    """First occurrence of every id, in order (what an idempotent consumer keeps)."""
    seen: set[str] = set()
    kept = []
    for value in values:
        if value[id_field] not in seen:
            seen.add(value[id_field])
            kept.append(value)
    return kept


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def get(url: str) -> Reply:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return Reply(response.status, dict(response.headers), orjson.loads(response.read()))
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), orjson.loads(error.read()))


def get_settled(url: str, deadline: float) -> Reply:
    """GET, asking again after ``Retry-After`` while the answer is 503 (a rebalance)."""
    reply = get(url)
    while reply.status == 503 and time.monotonic() < deadline:
        time.sleep(int(reply.headers["Retry-After"]))  # the server's advised retry interval
        reply = get(url)
    return reply


def member_url(base: str, member: str, suffix: str = "") -> str:
    return f"{base}/members/{urllib.parse.quote(member, safe='')}{suffix}"


def wait_for_group(bootstrap: str, group: str, members: int, timeout: float) -> None:
    """Until the consumer group is stable with ``members`` members; fail after ``timeout``
    s."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                description: Any = admin.describe_groups([group])[group]
            except KafkaError as error:
                if not error.retriable:  # e.g. the group's coordinator is not elected yet
                    raise
                description = error
            else:
                # Faust's assignor gives every member a share of the partitions (the test
                # checks afterwards that both workers own some).
                if (
                    description["group_state"] == "Stable"
                    and len(description["members"]) == members
                ):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"group {group} not stable with {members}: {description}")
            time.sleep(0.2)  # polling interval, not synchronisation
    finally:
        admin.close()


def start_group(settings: Settings, tmp_path: Path, count: int) -> list[WorkerProcess]:
    """``count`` workers of one app (their own state directory, log and web port), started
    and ready, their consumer group stable with all of them; stop them when done."""
    workers = [
        WorkerProcess(
            replace(settings, data_dir=tmp_path / f"state-{number}", web_port=free_port()),
            tmp_path / f"worker-{number}.log",
        )
        for number in range(1, count + 1)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
        wait_for_group(settings.kafka_bootstrap, settings.app_id, members=count, timeout=60)
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers
