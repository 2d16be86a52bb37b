"""Batched commits shared by the agents that keep their own tables.

A batch's state changes are produced to the tables' changelogs and acknowledged, then
written to the local RocksDB with their changelog offsets, and only then are its outputs
produced; the batch's input events are acknowledged to Faust once the outputs are. So
every output stands for a state change already durable in the changelog, and after a crash
the replayed input finds either the old state (nothing of it was emitted) or the new one,
and re-emits the same outputs.

A batch holds only bytes ready to send: each input record is applied, its state encoded
and its outputs serialised and checked inside that record's one failure boundary, and the
batch takes them only when all of that succeeded; a record that fails anywhere is
dead-lettered and leaves nothing else in the batch. So a commit never fails on a value.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
import orjson
from faust.streams import Stream
from faust.types import EventT, TableT, TopicT

from loyalty.agents.deadletters import dead_letter, kept_key
from loyalty.core.accounts import RejectedTransaction
from loyalty.core.saga import RejectedStationMessage
from loyalty.schemas.decode import InvalidEvent
from loyalty.schemas.state import MemberState
from loyalty.streams import faust_patches, metrics
from loyalty.streams.ordering import CoPartitionedOrder, Lagging
from loyalty.streams.topics import MAX_MESSAGE_BYTES, changelog_topic_name
from loyalty.tables.definitions import write_local

Record = tuple[str, bytes | None, bytes, int | None]
"""A message to produce: topic, key, value, partition (None: by key)."""

# Dead-letter reasons produced here.
STATE_TOO_LARGE = "state_too_large"
OUTPUT_TOO_LARGE = "output_too_large"

MAX_RECORD_BYTES = MAX_MESSAGE_BYTES - 4096
"""Most bytes of the value of one record the engine produces: the producer's and the
topics' limit less room for the record's framing and its key (an id the decoders bound,
at most a few hundred bytes)."""


class Unstorable(ValueError):
    """A record whose outcome cannot be stored or sent (dead-lettered with ``reason``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


REJECTIONS = (InvalidEvent, RejectedTransaction, RejectedStationMessage, Unstorable)
"""The errors that dead-letter one record with their own ``reason``; any other error of a
record is a ``processing_error``."""


def check_state(encoded: bytes, max_bytes: int) -> bytes:
    """``encoded``, a table value, unless it is above ``max_bytes`` (``state_too_large``)."""
    if len(encoded) > max_bytes:
        raise Unstorable(
            STATE_TOO_LARGE,
            f"the new state would take {len(encoded)} bytes; the limit is {max_bytes}",
        )
    return encoded


def check_outputs(records: list[Record]) -> list[Record]:
    """``records``, unless one is above the producer limit (``output_too_large``)."""
    for record in records:
        if len(record[2]) > MAX_RECORD_BYTES:
            raise Unstorable(
                OUTPUT_TOO_LARGE,
                f"an output to {record[0]} would take {len(record[2])} bytes; "
                f"the limit is {MAX_RECORD_BYTES}",
            )
    return records


class Batch:
    """What a batch of input messages changes and emits, held until it is committed."""

    def __init__(self) -> None:
        self.states: dict[bytes, MemberState] = {}
        """Members read or changed in this batch, by member key."""
        self.changes: dict[tuple[str, int], dict[bytes, bytes | None]] = {}
        """New encoded values by (table name, partition) and key; None deletes."""
        self.unordered: list[Record] = []
        """Forwards and dead letters: sent with the changelog records."""
        self.timestamps: dict[int, float] = {}
        """Kafka timestamps (seconds) of records of ``unordered``, by index: a forward keeps
        its input's, so that it is ordered by it on the owner partition."""
        self.outputs: list[Record] = []
        """Sent once the state changes are acknowledged."""
        self.counts: Counter[tuple[str, str]] = Counter()
        """Input events by (topic, outcome)."""
        self.ledger: Counter[str] = Counter()
        self.points: Counter[str] = Counter()
        self.enrolled = 0

    def change(self, table: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.changes.setdefault((table, partition), {})[key] = value

    def forward(self, record: Record, timestamp: float | None) -> None:
        """Send ``record`` with the changelog records, with the Kafka ``timestamp`` of the
        input it forwards (seconds, as Faust's messages carry it; None: the send time)."""
        if timestamp:
            self.timestamps[len(self.unordered)] = timestamp
        self.unordered.append(record)

    def dead_letter(
        self,
        topic: str,
        message: Any,
        reason: str,
        text: str,
        now_ms: int,
        redact: bool = False,
    ) -> None:
        """Send ``message`` to the dead-letter ``topic`` with the reason (with the changelog
        records: it depends on no state); ``redact`` leaves out its key and value."""
        record = orjson.dumps(dead_letter(message, reason, text, now_ms, redact))
        self.unordered.append((topic, None if redact else kept_key(message), record, None))
        self.counts[message.topic, "deadlettered"] += 1
        metrics.DEADLETTERS.labels(reason).inc()


class Committer:
    """Commits batches of changes to a set of raw tables (see the module docstring)."""

    def __init__(self, app_id: str, tables: dict[str, TableT]) -> None:
        self.app_id = app_id
        self.tables = tables
        """By table name."""
        self.producer: Any = None
        """Faust's Kafka producer, bound when the agent starts."""

    async def commit_all(self, batch: Batch) -> None:
        """Commit and wait for the outputs too."""
        for ack in await self.commit(batch):
            await ack

    async def commit(self, batch: Batch) -> list[Awaitable[Any]]:
        """Changelog first, acknowledged; then the local state; then the outputs, whose
        acknowledgements are returned."""
        send = self.producer.send
        written = []
        for (table, partition), changes in batch.changes.items():
            topic = changelog_topic_name(self.app_id, table)
            acks = [
                await send(topic, key, value, partition, None, None)
                for key, value in changes.items()
            ]
            written.append((table, partition, changes, acks))
        timestamps = batch.timestamps
        unordered = [
            await send(*record, _send_timestamp(timestamps.get(index)), None)
            for index, record in enumerate(batch.unordered)
        ]
        for table, partition, changes, acks in written:
            offset = max([(await ack).offset for ack in acks])
            write_local(self.tables[table], partition, changes, offset)
        outputs = [await send(*record, None, None) for record in batch.outputs]
        _count(batch)
        return unordered + outputs


def _send_timestamp(seconds: float | None) -> float | None:
    """``seconds``, a Kafka timestamp as Faust's messages carry it (milliseconds / 1000), as
    Faust's producer wants it so that it sends the same milliseconds (it truncates
    ``seconds * 1000``, which can fall a hair below a whole millisecond)."""
    if not seconds:
        return None
    return (round(seconds * 1000) + 0.5) / 1000


def _count(batch: Batch) -> None:
    for (topic, outcome), count in batch.counts.items():
        metrics.EVENTS.labels(topic, outcome).inc(count)
    for reason, count in batch.ledger.items():
        metrics.LEDGER_ENTRIES.labels(reason).inc(count)
        metrics.POINTS.labels(reason).inc(batch.points[reason])
    if batch.enrolled:
        metrics.MEMBERS_ENROLLED.inc(batch.enrolled)


class Batcher:
    """Natural batching: the messages that arrive while a batch is being committed form the
    next one, so batches are small (low latency) under light traffic and grow under load,
    with no timer. Events are acknowledged to Faust only once their batch is committed.

    With an ``order``, a batch takes the events the order releases (``streams.ordering``:
    one member's records of several co-partitioned topics by timestamp, waiting a bounded
    time for a topic-partition that ``lagging`` says has records still to come); the held
    ones are neither processed nor acknowledged, and are looked at again as events arrive,
    and every ``RECHECK_S`` while any is held."""

    def __init__(
        self,
        process: Callable[[list[Any]], Awaitable[list[Awaitable[Any]]]],
        max_size: int,
        on_failure: Callable[[BaseException], Awaitable[Any]],
        order: CoPartitionedOrder[EventT] | None = None,
        lagging: Lagging = lambda topic, partition, received: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.process = process
        self.max_size = max_size
        self.on_failure = on_failure
        """Called with the error that stopped the committer (the worker crashes on it: its
        uncommitted input is processed again after a restart)."""
        self.order = order
        self.lagging = lagging
        self.clock = clock
        """Monotonic seconds (the order's waits)."""
        self.pending: list[EventT] = []
        self.wakeup = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.task: asyncio.Task[None] | None = None
        self.recheck: asyncio.TimerHandle | None = None

    async def add(self, event: EventT) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())
        if self.task.done():
            self.task.result()  # the committer failed: fail the agent with its error
        self.pending.append(event)
        self.wakeup.set()
        if len(self.pending) >= self.max_size:  # back-pressure on Faust's stream
            self.room.clear()
            await self.room.wait()

    async def _run(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                # A batch's outputs are acknowledged while the next batch is processed;
                # its events are acknowledged to Faust after that.
                unfinished: tuple[list[EventT], list[Awaitable[Any]]] | None = None
                while events := self._take():
                    output_acks = await self.process([event.message for event in events])
                    if unfinished is not None:
                        await _finish(*unfinished)
                    unfinished = events, output_acks
                if unfinished is not None:
                    await _finish(*unfinished)
                self._recheck_later()
        except Exception as error:
            await self.on_failure(error)
            raise
        finally:
            self.room.set()  # never leave the stream waiting on a dead committer

    def _take(self) -> list[EventT]:
        """The next batch: the events received since the last one, less those held back."""
        received, self.pending = self.pending, []
        self.room.set()
        order = self.order
        if order is None or not (received or order.held):
            return received
        expired = order.expired
        ready = order.release(received, self.clock() * 1000, self.lagging)
        if order.expired != expired:
            metrics.ORDER_WAITS_EXPIRED.inc(order.expired - expired)
        if order.waited_ms:
            for waited_ms in order.waited_ms:
                metrics.ORDER_WAIT_SECONDS.observe(waited_ms / 1000)
            order.waited_ms.clear()
        return ready

    def _recheck_later(self) -> None:
        if self.recheck is not None:
            self.recheck.cancel()
            self.recheck = None
        if self.order is None or not self.order.held:
            return
        delay = RECHECK_S
        if self.order.wake_at_ms is not None:
            delay = min(delay, max(0.0, self.order.wake_at_ms / 1000 - self.clock()))
        self.recheck = asyncio.get_running_loop().call_later(delay, self.wakeup.set)

    def stop(self) -> None:
        if self.recheck is not None:
            self.recheck.cancel()
        if self.task is not None:
            self.task.cancel()


RECHECK_S = 0.005
"""While events are held, how often the topic-partitions they wait for are looked at again
(they can catch up without delivering anything: a transaction marker, say)."""


async def _finish(events: list[EventT], output_acks: list[Awaitable[Any]]) -> None:
    for ack in output_acks:
        await ack
    for event in events:
        event.ack()


READY_POLL_S = 0.05


def _message_of(event: EventT) -> Any:
    return event.message


def batched_agent(
    app: faust.App,
    topic: TopicT,
    name: str,
    process: Callable[[list[Any]], Awaitable[list[Awaitable[Any]]]],
    committer: Committer,
    batch_max: int,
    ready: Callable[[], bool] = lambda: True,
    order_topics: Sequence[str] = (),
    max_idle_ms: int = 0,
) -> None:
    """An agent of ``app`` on ``topic`` that hands its events to a :class:`Batcher` (its
    failure crashes the worker); it starts taking events once ``ready()`` is true. With
    ``order_topics`` (co-partitioned topics of ``topic``, highest rank first), a partition's
    records of those topics are ordered by timestamp (``streams.ordering``), waiting up to
    ``max_idle_ms`` for one of them with records still to come."""

    @app.agent(topic, name=name)
    async def batched(stream: faust.StreamT) -> None:
        while not ready():
            await asyncio.sleep(READY_POLL_S)
        committer.producer = app.producer
        order: CoPartitionedOrder[EventT] | None = None
        if order_topics:
            order = CoPartitionedOrder(order_topics, max_idle_ms, _message_of)
        lagging = faust_patches.lagging_partitions(app, order_topics)
        batcher = Batcher(process, batch_max, app.crash, order, lagging)
        try:
            async for event in cast(Stream, stream).noack().events():
                await batcher.add(event)
        finally:
            batcher.stop()
