"""Every Kafka topic of the engine, in one place: the topology's edges.

Values and keys travel as raw bytes: the engine parses each value exactly once with orjson
and serialises each output once, instead of going through Faust's model codecs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import faust
import orjson
from faust.types import TopicT
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from loyalty.core.saga import COORDINATOR, MEMBER, STOCK, Step
from loyalty.schemas.catalog import Reward, encode_reward
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.settings import Settings

logger = logging.getLogger(__name__)

# Dead letters carry the original value base64-encoded (4/3 of its size), and the
# contract says a 1 MB input must still reach the dead-letter topic intact.
TABLE_NAMES = (
    "member_to_state",
    "erased_members",
    "referral_code_to_member",
    "redemption_requests",
    "reward_stock",
)
"""The tables' names, in the order of the fields of ``tables.definitions.Tables``."""


def changelog_topic_name(app_id: str, table: str) -> str:
    """The name Faust gives ``table``'s changelog topic."""
    return f"{app_id}-{table}-changelog"


MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Topics:
    """The topics Faust reads or sends to. The account agent produces its outputs, forwards
    and changelog records straight to the producer, by the names in ``settings.topics``."""

    member_inputs: TopicT
    """Everything keyed by member: transactions and member events, as published and as
    forwarded to their owner partition."""
    deadletter: TopicT
    daily: TopicT
    referrals: TopicT
    member_commands: TopicT
    redemption_inputs: TopicT
    """Everything the redemption agent reads: station messages, saga replies, stock steps."""


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """The engine's topics on ``app``."""
    names = settings.topics

    def raw(*topic_names: str) -> TopicT:
        return app.topic(
            *topic_names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )

    return Topics(
        member_inputs=raw(
            names.transactions,
            names.members,
            names.rekeyed,
            names.members_rekeyed,
            names.daily,
            names.member_commands,
        ),
        deadletter=raw(names.deadletter),
        daily=raw(names.daily),
        referrals=raw(names.referrals),
        member_commands=raw(names.member_commands),
        redemption_inputs=raw(names.redemptions, names.redemption_steps, names.stock_commands),
    )


class TopicLayoutError(RuntimeError):
    """An existing topic whose partition count breaks co-partitioning."""


DAY_MS = 24 * 3600 * 1000


def deadletter_retention_ms(settings: Settings) -> int:
    """``retention.ms`` of the dead-letter topic: a dead letter keeps the original bytes of
    a rejected input, personal data included, which an erase does not reach; the retention
    bounds how long it stays."""
    return round(settings.deadletter_retention_days * DAY_MS)


def deadletter_configs(settings: Settings) -> dict[str, str]:
    """The dead-letter topic's retention settings. Kafka deletes whole segments once their
    newest record is past ``retention.ms``, so a segment rolled daily (or sooner, for a
    shorter retention) keeps a record at most a day longer than the retention."""
    retention_ms = deadletter_retention_ms(settings)
    return {"retention.ms": str(retention_ms), "segment.ms": str(min(retention_ms, DAY_MS))}


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the engine's topics that do not exist yet; return the names created.

    Topics feeding the member tables must have exactly ``settings.partitions`` partitions
    (their partitions map one to one onto the table changelog partitions).
    """
    names = settings.topics
    # Faust creates a table's changelog topic only once the app runs; until then (a fresh
    # deployment's first worker) the table's writes fail, so they are created here.
    changelogs = [changelog_topic_name(settings.app_id, table) for table in TABLE_NAMES]
    co_partitioned = {
        names.transactions,
        names.members,
        names.rekeyed,
        names.members_rekeyed,
        names.daily,
        names.referrals,
        names.member_commands,
        names.redemptions,
        names.redemption_steps,
        names.stock_commands,
        *changelogs,
    }
    compacted = {*changelogs, names.catalog}
    retention = deadletter_configs(settings)
    wanted = [
        *changelogs,
        names.daily,
        names.referrals,
        names.member_commands,
        names.transactions,
        names.members,
        names.rekeyed,
        names.members_rekeyed,
        names.ledger,
        names.rewards,
        names.notifications,
        names.deadletter,
        names.segments,
        names.catalog,
        names.redemptions,
        names.redemption_steps,
        names.stock_commands,
    ]
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        present = set(admin.list_topics())
        existing = {
            item["name"]: len(item["partitions"])
            for item in admin.describe_topics([name for name in wanted if name in present])
        }
        for name in sorted(co_partitioned & existing.keys()):
            if existing[name] != settings.partitions:
                raise TopicLayoutError(
                    f"topic {name!r} has {existing[name]} partitions but LOYALTY_PARTITIONS is "
                    f"{settings.partitions}; they must be equal for members to stay co-partitioned"
                )
        created = []
        for name in (name for name in wanted if name not in existing):
            topic = NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={
                    "max.message.bytes": str(MAX_MESSAGE_BYTES),
                    **({"cleanup.policy": "compact"} if name in compacted else {}),
                    **(retention if name == names.deadletter else {}),
                },
            )
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another worker created it first
        if names.deadletter not in created:  # it existed, maybe with another retention
            _ensure_configs(admin, names.deadletter, retention)
        return created
    finally:
        admin.close()


def _ensure_configs(admin: KafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    """Set ``configs`` on an existing ``topic`` (created by an earlier version, or with
    another LOYALTY_DEADLETTER_RETENTION_DAYS) where they differ; its other settings are
    left alone (an incremental change). A refusal (no AlterConfigs permission) is logged,
    not raised: the worker still starts."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict.fromkeys(configs))
    try:
        described = admin.describe_configs([resource], config_filter="all")
        current = described.get("topic", {}).get(topic, {})
        changes = {
            name: value
            for name, value in configs.items()
            if current.get(name, {}).get("value") != value
        }
        if not changes:
            return
        change = ConfigResource(ConfigResourceType.TOPIC, topic, configs=changes)
        # No validation against the topic's described configs: a topic created a moment ago
        # (by another worker) can still describe as empty.
        results = admin.alter_configs([change], incremental=True, raise_on_unknown=False)
        result = results.get("topic", {}).get(topic)
    except KafkaError as error:
        result = repr(error)
    if result != "OK":
        logger.warning("could not set %s on %s: %s", _configs_text(configs), topic, result)


def _configs_text(configs: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in configs.items())


def daily_commands(day: date, partitions: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the command that runs the daily job of ``day`` on every
    partition; the worker owning each partition applies it to the members it holds."""
    command = orjson.dumps({"command": "daily", "date": day.isoformat()})
    return [(p, f"daily:{day.isoformat()}:{p}".encode(), command) for p in range(partitions)]


def send_daily_commands(settings: Settings, day: date) -> int:
    """Publish the daily job of ``day`` (``loyalty daily --date``); return the partitions."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        for partition, key, value in daily_commands(day, settings.partitions):
            producer.send(settings.topics.daily, key=key, value=value, partition=partition)
        producer.flush()
    finally:
        producer.close()
    return settings.partitions


def saga_message(settings: Settings, step: Step) -> tuple[str, bytes, bytes, int]:
    """(topic, key, value, partition) of a redemption saga message: to the member's, the
    request's or the reward's partition (``core.saga``)."""
    destination, key, value = step
    names = settings.topics
    topic = {
        MEMBER: names.member_commands,
        COORDINATOR: names.redemption_steps,
        STOCK: names.stock_commands,
    }[destination]
    encoded = key.encode()
    return topic, encoded, orjson.dumps(value), owner_partition(encoded, settings.partitions)


def publish_catalog(settings: Settings, rewards: list[Reward]) -> None:
    """Publish catalog entries to the catalog topic, keyed by reward_id (``loyalty catalog
    load``); raises the error of a record Kafka refused."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all")
    try:
        sent = [
            producer.send(
                settings.topics.catalog, key=reward.reward_id.encode(), value=encode_reward(reward)
            )
            for reward in rewards
        ]
        producer.flush()
        for future in sent:
            future.get()
    finally:
        producer.close()
