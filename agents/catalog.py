"""The catalog on every worker: a feed keeping the worker's ``CatalogView`` current, and
``GET /catalog`` (described in ``agents.openapi``).

Every worker needs the whole catalog and the live stock of every reward, whatever
partitions it holds, so the feed is not a Faust agent (an agent's partitions are shared out
among the group): it is its own consumer, with no group, assigned every partition of
``loyalty.catalog`` and of the ``reward_stock`` table's changelog, reading them from the
beginning and then as records arrive, for as long as the worker runs. It commits nothing:
a restarted worker reads both topics again, and both are compacted, so that stays short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from loyalty.agents.accounts import wall_clock_ms
from loyalty.agents.deadletters import send_dead_letter
from loyalty.agents.openapi import CATALOG_LOADING
from loyalty.agents.profiles import RETRY_AFTER_S, Answer
from loyalty.core.catalog import CatalogView
from loyalty.schemas.decode import INVALID_VALUE
from loyalty.streams.settings import Settings
from loyalty.streams.topics import changelog_topic_name

logger = logging.getLogger(__name__)

DISCOVERY_INTERVAL_S = 5.0
"""How often the feed looks again for a topic that did not exist yet, and how often the
consumer's metadata is refreshed (new partitions of a topic are assigned then)."""
RESTART_DELAY_S = 2.0
"""Wait before a consumer that failed (broker unreachable, ...) is started again."""
FETCH_MAX_WAIT_MS = 500
"""Longest the broker holds a fetch of the view's (mostly quiet) topics."""
POLL_TIMEOUT_MS = 500
"""Longest wait of one poll; records are applied as soon as they arrive."""
ASSIGNMENT_TIMEOUT_S = 30.0
"""Longest wait for the partitions of the topics found at start to be assigned."""


def catalog_answer(view: CatalogView, locale: str | None) -> Answer:
    """``GET /catalog``: every reward with its live stock, or 503 until the view is ready."""
    if not view.ready:
        return Answer(
            503,
            {
                "error": CATALOG_LOADING,
                "message": "this worker is still reading the catalog and the reserved stock",
            },
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    return Answer(200, view.listing(locale or None))


class CatalogFeed(Service):
    """Applies every record of the catalog topic and of the ``reward_stock`` changelog to
    ``view``, and sets ``view.ready`` once it has read up to the end offsets the topics had
    when it started (a topic that did not exist then counts as empty)."""

    def __init__(
        self,
        settings: Settings,
        view: CatalogView,
        reject: Callable[[Any, str], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.view = view
        self.reject = reject
        """Called with each ``loyalty.catalog`` record the view refused and why (the worker
        dead-letters it)."""
        self.catalog_topic = settings.topics.catalog
        self.stock_topic = changelog_topic_name(settings.app_id, "reward_stock")
        self._next_offset: dict[TopicPartition, int] = {}
        """Per partition, the offset after the last record applied: a partition assigned
        again (the consumer restarted, a topic appeared) resumes there, and records below
        it are never applied twice, so the view never goes back in time."""
        self._ends: dict[TopicPartition, int] | None = None
        """End offsets at start: what the view must have read to be ready."""

    @Service.task
    async def _follow(self) -> None:
        while not self.should_stop:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                client_id=f"{self.settings.app_id}-catalog-view",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                metadata_max_age_ms=int(DISCOVERY_INTERVAL_S * 1000),
                # Bounds how long a record can wait for a fetch that left its partition out.
                # The view's topics are mostly quiet: a short wait would make this consumer
                # fetch 50 times a second in the worker's event loop, which measurably
                # delayed the agents (p99 at 1,000 tx/s +50 ms); live stock within half a
                # second is enough for a catalog page.
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            try:
                await consumer.start()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The view must never stop the worker: log, and start over from where the
                # view is (``_next_offset``).
                logger.exception("catalog feed failed; restarting in %s s", RESTART_DELAY_S)
                await self.sleep(RESTART_DELAY_S)
            finally:
                await consumer.stop()

    async def _existing(self, consumer: AIOKafkaConsumer) -> list[str]:
        """The feed's topics that exist now. They are listed with every topic of the
        cluster: a metadata request naming a missing topic would let a broker with
        ``auto.create.topics.enable`` create it, uncompacted."""
        present = await consumer.topics()
        return [topic for topic in (self.catalog_topic, self.stock_topic) if topic in present]

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        subscribed = await self._existing(consumer)
        if subscribed:
            # Without a group, a subscription is assigned every partition of its topics,
            # including partitions added later (seen at a metadata refresh).
            consumer.subscribe(subscribed)
        if self._ends is None:
            self._ends = await self._end_offsets(consumer, subscribed)
        assigned: frozenset[TopicPartition] = frozenset()
        looked_at = asyncio.get_running_loop().time()
        while not self.should_stop:
            if len(subscribed) < 2 and self._elapsed(looked_at) >= DISCOVERY_INTERVAL_S:
                looked_at = asyncio.get_running_loop().time()
                present = await self._existing(consumer)
                if present != subscribed:
                    subscribed = present
                    consumer.subscribe(subscribed)
            if not subscribed:
                self._check_ready()
                await self.sleep(DISCOVERY_INTERVAL_S)
                continue
            if consumer.assignment() != assigned:
                assigned = frozenset(consumer.assignment())
                self._resume(consumer, assigned)
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            for tp, records in batches.items():
                for record, why in self._apply(tp, records):
                    if self.reject is not None:
                        await self.reject(record, why)
            if not self.view.ready:
                await self._catch_up(consumer, assigned)

    async def _end_offsets(
        self, consumer: AIOKafkaConsumer, topics: list[str]
    ) -> dict[TopicPartition, int]:
        """The end offset of every partition of ``topics``, once the subscription's
        assignment holds them all."""
        if not topics:
            return {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ASSIGNMENT_TIMEOUT_S
        while {tp.topic for tp in consumer.assignment()} != set(topics):
            # The assignment follows the subscription at the consumer's next metadata update.
            if loop.time() > deadline:
                raise TimeoutError(f"no partitions of {topics} assigned")
            await self.sleep(0.05)
            if self.should_stop:
                return {}
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(consumer.assignment()))
        return ends

    def _resume(self, consumer: AIOKafkaConsumer, assigned: frozenset[TopicPartition]) -> None:
        for tp in assigned:
            if tp in self._next_offset:
                consumer.seek(tp, self._next_offset[tp])

    def _apply(self, tp: TopicPartition, records: list[Any]) -> list[tuple[Any, str]]:
        """Apply records of one partition; returns the catalog records refused, and why."""
        is_catalog = tp.topic == self.catalog_topic
        apply = self.view.apply_catalog if is_catalog else self.view.apply_stock
        refused = []
        for record in records:
            if record.offset < self._next_offset.get(tp, 0):
                continue  # read again after a reassignment: already applied
            try:
                skipped = apply(record.key, record.value)
            except Exception as error:  # noqa: BLE001 - one record must not stop the view
                # Restarting the consumer would read the record again, forever.
                self.view.skipped += 1
                skipped = f"{type(error).__name__}: {str(error)[:200]}"
            if skipped is not None:
                logger.warning(
                    "skipped record %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, skipped
                )
                if is_catalog:
                    refused.append((record, skipped))
            self._next_offset[tp] = record.offset + 1
        return refused

    async def _catch_up(
        self, consumer: AIOKafkaConsumer, assigned: frozenset[TopicPartition]
    ) -> None:
        """Set ``view.ready`` once every partition is read up to its end offset at start."""
        assert self._ends is not None
        for tp, end in list(self._ends.items()):
            # A partition not assigned for a moment (the subscription being reassigned) is
            # checked next time; position() also counts offsets without a record left
            # (compacted away).
            if tp in assigned and await consumer.position(tp) >= end:
                del self._ends[tp]
        self._check_ready()

    def _check_ready(self) -> None:
        if self._ends == {} and not self.view.ready:
            self.view.ready = True
            logger.info("catalog view ready: %d rewards", len(self.view.listing()))

    @staticmethod
    def _elapsed(since: float) -> float:
        return asyncio.get_running_loop().time() - since


def register(app: faust.App, settings: Settings, view: CatalogView) -> CatalogFeed:
    """Keep ``view`` current on this worker (the feed starts and stops with the app) and
    serve ``GET /catalog`` from it."""
    deadletter = app.topic(settings.topics.deadletter, key_type=bytes, value_type=bytes)

    async def reject(record: Any, why: str) -> None:
        # Every worker reads the whole catalog, so each dead-letters a refused record: the
        # copies carry the same deadletter_id (topic, partition, offset).
        message = SimpleNamespace(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=None if record.timestamp is None else record.timestamp / 1000,
            key=record.key,
            value=record.value,
        )
        await send_dead_letter(deadletter, message, INVALID_VALUE, why, wall_clock_ms())

    feed = CatalogFeed(settings, view, reject)
    # A dependency of the app starts with it, before table recovery (the catalog does not
    # wait for the worker's partitions), and stops with it.
    app.add_dependency(feed)

    @app.page("/catalog")
    async def get_catalog(web: Any, request: Any) -> Any:
        answer = catalog_answer(view, request.query.get("locale"))
        return web.bytes(
            orjson.dumps(answer.body),
            content_type="application/json",
            status=answer.status,
            headers=dict(answer.headers),
        )

    return feed
