"""The local Kafka broker of localkafka/broker.py: install, start, status, stop, and real I/O."""

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from loyalty.localkafka import broker


def _create_topic(bootstrap: str) -> str:
    topic = f"localkafka-test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    return topic


def _consume_one(bootstrap: str, topic: str, timeout: float = 30.0) -> bytes:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                return bytes(records[0].value)
    finally:
        consumer.close()
    raise AssertionError(f"no message on {topic} within {timeout}s")


def test_second_start_on_same_data_dir_is_a_noop(kafka_broker: broker.BrokerStatus) -> None:
    again = broker.start(port=kafka_broker.port or 0, data_dir=kafka_broker.data_dir)

    assert again.running
    assert again.pid == kafka_broker.pid
    assert again.bootstrap == kafka_broker.bootstrap


def test_status_reports_the_running_broker(kafka_broker: broker.BrokerStatus) -> None:
    current = broker.status(kafka_broker.data_dir)

    assert current.running
    assert current.pid == kafka_broker.pid
    assert current.port == kafka_broker.port
    assert current.bootstrap == f"127.0.0.1:{kafka_broker.port}"


def test_produce_and_consume_one_message(kafka_bootstrap: str) -> None:
    topic = _create_topic(kafka_bootstrap)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        producer.send(topic, key=b"member-1", value=b"points:+10").get(timeout=30)
    finally:
        producer.close()

    assert _consume_one(kafka_bootstrap, topic) == b"points:+10"


def test_broker_accepts_messages_larger_than_the_kafka_default(kafka_bootstrap: str) -> None:
    topic = _create_topic(kafka_bootstrap)
    payload = os.urandom(2 * 1024 * 1024)  # Kafka's default message.max.bytes is ~1 MB
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    try:
        producer.send(topic, value=payload).get(timeout=30)
    finally:
        producer.close()

    assert _consume_one(kafka_bootstrap, topic) == payload


def test_topics_are_not_auto_created(kafka_bootstrap: str) -> None:
    topic = f"localkafka-missing-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(topic, value=b"x").get(timeout=10)
    finally:
        producer.close()

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert topic not in admin.list_topics()
    finally:
        admin.close()


def test_second_install_is_cached_and_does_not_run_maven(
    kafka_broker: broker.BrokerStatus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    assert shutil.which("mvn") is None

    started = time.monotonic()
    libs = broker.install()
    elapsed = time.monotonic() - started

    assert libs == broker.kafka_home().resolve() / "libs"
    assert (libs / f"kafka_2.13-{broker.KAFKA_VERSION}.jar").is_file()
    assert elapsed < 1.0


def test_install_without_java_or_maven_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("JAVA_HOME", raising=False)

    with pytest.raises(broker.BrokerError, match="Java is not on PATH"):
        broker.install(tmp_path / "kafka-home")
    assert not (tmp_path / "kafka-home" / ".complete").exists()


def test_start_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        with pytest.raises(broker.BrokerError, match=f"port {port} .* already in use"):
            broker.start(port=port, data_dir=tmp_path / "kafka")


def test_stop_stops_a_separate_broker_and_restart_reuses_its_storage(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    meta = data_dir / "logs" / "meta.properties"
    try:
        first = broker.start(port=broker.free_port(), data_dir=data_dir)
        assert first.running and first.pid is not None
        cluster_id = meta.read_text()

        assert broker.stop(data_dir) is True
        assert broker.status(data_dir) == broker.BrokerStatus(False, None, None, None, data_dir)
        with pytest.raises(ProcessLookupError):
            os.kill(first.pid, 0)
        assert broker.stop(data_dir) is False

        second = broker.start(port=broker.free_port(), data_dir=data_dir)
        assert second.running and second.pid != first.pid
        assert meta.read_text() == cluster_id  # formatted once, not again
    finally:
        broker.stop(data_dir)
    assert not broker.status(data_dir).running
