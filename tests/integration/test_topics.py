"""``ensure_topics`` against the real broker: every topic, table changelogs included."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from loyalty.streams.topics import (
    TABLE_NAMES,
    TopicLayoutError,
    changelog_topic_name,
    ensure_topics,
)
from tests.integration.harness import isolated_settings


def test_a_fresh_deployment_gets_every_topic_with_compacted_changelogs(kafka_bootstrap, tmp_path):
    settings = isolated_settings(kafka_bootstrap, tmp_path, partitions=3)
    changelogs = {changelog_topic_name(settings.app_id, table) for table in TABLE_NAMES}
    wanted = set(vars(settings.topics).values()) | changelogs

    assert set(ensure_topics(settings)) == wanted
    assert ensure_topics(settings) == []  # idempotent

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {item["name"]: item for item in admin.describe_topics(sorted(wanted))}
        assert {name: len(item["partitions"]) for name, item in described.items()} == dict.fromkeys(
            wanted, 3
        )
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(changelogs)]
        described_configs = admin.describe_configs(resources)
        by_topic = next(iter(described_configs.values()))
        assert set(by_topic) == changelogs
        for name, configs in by_topic.items():
            assert "compact" in str(configs["cleanup.policy"]), (name, configs["cleanup.policy"])
    finally:
        admin.close()


def test_a_changelog_with_another_partition_count_is_refused(kafka_bootstrap, tmp_path):
    settings = replace(isolated_settings(kafka_bootstrap, tmp_path), partitions=4)
    changelog = changelog_topic_name(settings.app_id, "member_to_state")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(changelog, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()
    with pytest.raises(TopicLayoutError, match="member_to_state-changelog"):
        ensure_topics(settings)


def dead_letter_configs(admin: KafkaAdminClient, topic: str) -> dict[str, str | None]:
    names = {"retention.ms": None, "segment.ms": None}
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=names)
    described = admin.describe_configs([resource], config_filter="all")["topic"][topic]
    return {name: described.get(name, {}).get("value") for name in names}


def wait_for_retention(admin: KafkaAdminClient, topic: str, days: float) -> None:
    """Until the broker describes ``topic`` with the retention of ``days`` and segments of a
    day at most (a topic created a moment ago can still describe as empty)."""
    day_ms = 24 * 3600 * 1000
    expected = {"retention.ms": str(round(days * day_ms)), "segment.ms": str(day_ms)}
    if days < 1:
        expected["segment.ms"] = expected["retention.ms"]
    deadline = time.monotonic() + 30
    while (current := dead_letter_configs(admin, topic)) != expected:
        assert time.monotonic() < deadline, f"{topic}: {current}, not {expected}"
        time.sleep(0.2)  # polling interval, not synchronisation


def test_the_deadletter_topic_keeps_records_a_bounded_time(kafka_bootstrap, tmp_path):
    settings = replace(isolated_settings(kafka_bootstrap, tmp_path), deadletter_retention_days=2)
    unbounded = isolated_settings(kafka_bootstrap, tmp_path)  # an earlier version's topic
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert settings.topics.deadletter in ensure_topics(settings)
        wait_for_retention(admin, settings.topics.deadletter, 2)
        # Another setting applies to the existing topic at the next start (or loyalty topics).
        ensure_topics(replace(settings, deadletter_retention_days=0.5))
        wait_for_retention(admin, settings.topics.deadletter, 0.5)

        admin.create_topics([NewTopic(unbounded.topics.deadletter, 4, 1)])
        assert unbounded.topics.deadletter not in ensure_topics(unbounded)
        wait_for_retention(admin, unbounded.topics.deadletter, 7)  # the default
    finally:
        admin.close()
