"""Fixes for faust-streaming 0.15.3: input lost or stalled after a worker restart (1-3),
changelog recovery too slow (4), deliveries stalled by a fetch wait (5), HTTP connections
never timed out (6), no way to tell whether a partition has records still to come (7).

1-3 were found by the restart tests (a worker SIGKILLed mid-stream, then restarted) and
checked with a loop of such restarts; remove them when upstream has them.

1. Seek before resume.

``Recovery.on_recovery_completed`` resumes the stream partitions *before* it seeks them to
their committed offsets. The fetcher is already running (flow was resumed for changelog
recovery), so in the await window it fetches and delivers stream records, then the seek
rewinds the read offsets under the drain loop. Measured here (worker SIGKILLed mid-stream,
then restarted): the new worker stopped committing (offset gaps that never closed) and one
input message in a few restarts was never processed. The same ordering bug was fixed
upstream for apps without tables (faust-streaming PR #217, ``_resume_streams``); this
applies the same order, seek first, then resume, to the path used by apps with tables.

2. Rewind partitions that have no committed offset. Whenever Faust drops fetched records
(flow stopped during a rebalance) it "seeks back to committed offsets"; aiokafka's
``seek_to_committed`` leaves a partition without a committed offset (or at offset 0) where
the fetcher left it, past the dropped records, which are then never processed. The engine
reads from the earliest offset when nothing is committed, so such partitions are rewound
to their beginning.

3. Flush means flushed. Table changelog writes go through Faust's ``ProducerBuffer``; its
``flush`` (called before every offset commit) returns when its queue is empty, while the
message its sender task just took is still on its way to the Kafka client, and it gives up
after 0.1 s. The offsets could then be committed before the state change they cover was
produced: a restart after SIGKILL lost that change (found by the cold-restart test as a
second welcome bonus). The fix counts the message in flight and waits for both.

4. Changelog recovery without the per-message path. Faust restores a table by delivering
every changelog record like a stream message (one ``ConsumerMessage``, one task pair in
``Consumer._drain_messages``, one ``Event`` decoded and queued, one queue read and one scan
of every partition's remaining count in ``Recovery._slurp_changelogs``): about 85 µs of CPU
per record here, 85 s per million members. While a recovery is running, the records the
fetcher returns for the active changelog partitions of RocksDB tables are applied as one
batch per partition instead, through the table's own ``apply_changelog_batch`` (the same
RocksDB writes and ``set_persisted_offset`` as Faust's), and the recovery's offsets are
advanced as ``_slurp_changelogs`` advances them, so Faust's own logic still decides when
the changelogs are read up to their end offsets. Other records take the usual path.

5. A fetch that finds nothing holds up the partitions that were left out of it. Faust
creates its consumer with ``fetch_max_wait_ms=1500``, fixed. aiokafka leaves a partition
out of the next fetch request while records fetched for it are still buffered; when that
request covers only quiet partitions (the daily, referral and member topics, say), the
broker holds it for the full 1.5 s, and records arriving on the busy partitions wait for
it. Measured here at 1,000 transactions/s: deliveries stalled for about a second every
two, p50 latency 1.4 s with the worker at 45% of a core; with 20 ms, p50 30 ms. The wait
comes from ``LOYALTY_FETCH_MAX_WAIT_MS``.

6. HTTP connections never time out. Faust creates its aiohttp ``AppRunner`` with aiohttp's
defaults and no setting to change them: an idle connection is kept 3,630 s (aiohttp 3.14;
its keep-alive timer starts with the connection, so this is also how long a client may
take to send its request line and headers, one byte at a time if it likes), and a body
the page did not read is drained for 10 s. Measured before the fix: a connection that
sent half a request line stayed open. ``time_out_http_connections`` gives the app's web
server a runner with the same arguments plus both limits (``LOYALTY_HTTP_TIMEOUT_S``).

7. Records still to come. Faust hands the records of different topic-partitions over in
its own round-robin order (``DefaultSchedulingStrategy``), not by time, and says nothing of
records it has not handed over yet; the account agent orders a member partition's records
itself (``streams.ordering``, as Kafka Streams' ``PartitionGroup`` does) and must know
whether a topic-partition with nothing buffered has records on their way. Measured before
(issue 19): 15 to 40 of 96 members whose sale was produced after the broker acknowledged
their signup had the sale applied first. ``lagging_partitions`` answers from the aiokafka
client's state (the high watermark of its last fetch, its position) and from the offset of
the last record the client handed to Faust, noted here by ``_wait_next_records``, and from
when each partition was last fetched: a topic-partition whose latest fetch is older than the
fetch that brought the newest records of its partition number may have missed records
appended before them, so it is waited for until fetched again (a fetch request leaves out
the partitions that have records buffered, and each broker is fetched from separately).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

import faust
from aiohttp.web import AppRunner
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

from loyalty.streams import metrics

_original_on_recovery_completed = Recovery.on_recovery_completed


async def _on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    consumer: Any = self.app.consumer
    resume_partitions = consumer.resume_partitions
    perform_seek = consumer.perform_seek
    deferred: list[Any] = []

    async def seek_then_resume() -> None:
        await perform_seek()
        for tps in deferred:
            resume_partitions(tps)
        deferred.clear()

    # Instance attributes shadow the methods only while the original runs.
    consumer.resume_partitions = deferred.append
    consumer.perform_seek = seek_then_resume
    try:
        await _original_on_recovery_completed(self, generation_id)
    finally:
        del consumer.resume_partitions
        del consumer.perform_seek
        for tps in deferred:  # no assignment: the original never called perform_seek
            resume_partitions(tps)


async def _seek_to_committed(self: AIOKafkaConsumerThread) -> Any:
    consumer = self._ensure_consumer()

    async def seek() -> Any:
        committed = await consumer.seek_to_committed()
        uncommitted = [tp for tp, offset in committed.items() if not offset]
        if uncommitted:
            await consumer.seek_to_beginning(*uncommitted)
        return committed

    return await self.call_thread(seek)


_original_send_pending = ProducerBuffer._send_pending


async def _send_pending(self: ProducerBuffer, fut: Any) -> None:
    # Called in the same step that takes the message off the queue, so a message is
    # always either queued or counted here.
    self.__dict__["in_flight"] = self.__dict__.get("in_flight", 0) + 1
    try:
        await _original_send_pending(self, fut)
    finally:
        self.__dict__["in_flight"] -= 1


async def _flush(self: ProducerBuffer) -> None:
    while self.size or self.__dict__.get("in_flight", 0):
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        except TimeoutError:
            continue  # still waiting: a flush that gives up is not a flush


class _ChangelogRecord:
    """A fetched changelog record, shaped as the RocksDB store's ``apply_changelog_batch``
    reads its events (``event.message.tp`` ... ``.value``)."""

    __slots__ = ("tp", "partition", "offset", "key", "value")

    def __init__(self, tp: Any, record: Any) -> None:
        self.tp = tp
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value

    @property
    def message(self) -> _ChangelogRecord:
        return self


def _restores_in_batches(table: Any) -> bool:
    # Only RocksDB stores write the raw changelog bytes (the memory store decodes them),
    # and a table with an ``on_changelog_event`` callback wants every event.
    return isinstance(table.data, RocksDBStore) and not table._on_changelog_event


def _restore_changelogs(
    consumer: Consumer, recovery: Recovery, records: Any, active_partitions: Any
) -> Any:
    """Apply the records of actively recovered changelog partitions (as
    ``Recovery._slurp_changelogs`` would, one batch per partition); return the others."""
    rest = {}
    applied = False
    for tp, tp_records in records.items():
        table: Any = recovery.tp_to_table.get(tp)
        if (
            not tp_records
            or tp not in recovery.active_tps
            or table is None
            or (active_partitions is not None and tp not in active_partitions)
            or not _restores_in_batches(table)
        ):
            rest[tp] = tp_records
            continue
        seen = recovery.active_offsets.get(tp)
        batch = [
            _ChangelogRecord(tp, record)
            for record in tp_records
            if seen is None or record.offset > seen
        ]
        if batch:
            if any(recovery.buffers.values()):
                recovery.flush_buffers()  # what Faust buffered comes first
            table.apply_changelog_batch(batch)
            metrics.CHANGELOG_RECORDS_RESTORED.inc(len(batch))
            recovery.active_offsets[tp] = batch[-1].offset
            recovery._active_events_received_at[tp] = monotonic()
            applied = True
        consumer._read_offset[tp] = tp_records[-1].offset
        consumer.app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
    if applied:
        recovery._last_flush_at = monotonic()
        # As ``_slurp_changelogs`` ends the recovery once every active changelog
        # partition is read up to its highwater.
        if recovery.in_recovery and not recovery.need_recovery():
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
    return rest


_original_wait_next_records = Consumer._wait_next_records


async def _wait_next_records(self: Consumer, timeout: float) -> Any:
    records, active_partitions = await _original_wait_next_records(self, timeout)
    if records and self.flow_active:
        recovery = self.app.tables._recovery  # type: ignore[attr-defined]
        if recovery is not None and recovery.in_recovery:
            records = _restore_changelogs(self, recovery, records, active_partitions)
    if records:
        _note_returned(self, records)
    return records, active_partitions


_CLOCK_SET_BACK_MS = 60_000


class _Handover:
    """What the Kafka client handed to Faust (fix 7), kept on the consumer."""

    __slots__ = ("returned", "ordered", "fetched_at")

    def __init__(self) -> None:
        self.returned: dict[Any, tuple[int, int]] = {}
        """By topic-partition: the consumer generation and the offset of the last record."""
        self.ordered: frozenset[str] = frozenset()
        """Topics whose records are ordered across topics (``lagging_partitions``)."""
        self.fetched_at: dict[int, int] = {}
        """By partition number: when the client received the newest fetch response whose
        records of ``ordered`` topics it handed over (its clock, epoch ms)."""


def _handover(consumer: Any) -> _Handover:
    handover: _Handover = consumer.__dict__.setdefault("loyalty_handover", _Handover())
    return handover


def _client_partitions(consumer: Any) -> dict[Any, Any] | None:
    """aiokafka's state of each assigned topic-partition (``TopicPartitionState``) by
    topic-partition, read without its properties (a hot path); None when there is none."""
    client = consumer._thread._consumer
    if client is None:
        return None
    subscription = client._subscription._subscription
    assignment = None if subscription is None else subscription._assignment
    return None if assignment is None else assignment._tp_state


def _note_returned(consumer: Consumer, records: Any) -> None:
    handover = _handover(consumer)
    generation = consumer.app.consumer_generation_id
    states = _client_partitions(consumer) if handover.ordered else None
    fetched_at = handover.fetched_at
    for tp, tp_records in records.items():
        if tp_records:
            handover.returned[tp] = (generation, tp_records[-1].offset)
            if states is not None and tp.topic in handover.ordered:
                state = states.get(tp)
                received = None if state is None else state.timestamp
                if received is None:
                    continue
                newest = fetched_at.get(tp.partition, 0)
                # The newest, unless the clock was set back (then the newest would hold
                # every partition back until the clock caught up).
                if received > newest or newest - received > _CLOCK_SET_BACK_MS:
                    fetched_at[tp.partition] = received


def lagging_partitions(
    app: faust.App, topics: Iterable[str]
) -> Callable[[str, int, int | None], bool]:
    """``lagging(topic, partition, received)`` for the co-partitioned ``topics``: whether
    that topic-partition of ``app``'s consumer may have records that the caller, whose last
    record of it is at offset ``received`` (None: none yet), has not got (fix 7):

    - records on the broker as of the client's latest fetch of it, or fetched and not
      handed to Faust yet (its position below the high watermark; also True while it has
      not been fetched at all);
    - records handed to Faust and still on their way to the caller;
    - or its latest fetch is older than the newest fetch that brought records of the same
      partition number of another of ``topics``: records appended before those may have
      been missed by it (it was left out of fetches while it had records buffered, or its
      leader is another broker).

    False for a topic-partition not assigned to the consumer."""
    handover = _handover(app.consumer)
    handover.ordered = handover.ordered | frozenset(topics)

    def lagging(topic: str, partition: int, received: int | None) -> bool:
        consumer: Any = app.consumer
        states = _client_partitions(consumer)
        # A (topic, partition) tuple is equal to, and hashed as, the TopicPartition keys.
        state = None if states is None else states.get((topic, partition))
        if state is None:
            return False
        highwater = state.highwater
        position = state._position
        if highwater is None or position is None or position < highwater:
            return True
        handed = handover.returned.get((topic, partition))
        if (
            handed is not None
            and handed[0] == app.consumer_generation_id
            and (received is None or handed[1] > received)
        ):
            return True
        return bool((state.timestamp or 0) < handover.fetched_at.get(partition, 0))

    return lagging


_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
_fetch_max_wait_ms = 20


def _create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    consumer = _original_create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # read when the consumer starts
    return consumer


def apply(fetch_max_wait_ms: int) -> None:
    """Install the fixes (idempotent); ``fetch_max_wait_ms`` replaces Faust's 1.5 s."""
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = fetch_max_wait_ms
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush  # type: ignore[method-assign]
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
    Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]


def time_out_http_connections(app: faust.App, timeout_s: float) -> None:
    """Close the connections of ``app``'s web server that stay idle, or take longer to send
    a request, than ``timeout_s`` (fix 6); call before the server starts."""
    web: Any = app.web
    # As faust.web.drivers.aiohttp.Web.__init__ builds it, plus the two limits.
    web._runner = AppRunner(
        web.web_app, access_log=None, keepalive_timeout=timeout_s, lingering_time=timeout_s
    )
