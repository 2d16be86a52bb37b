"""Fixes for faust-streaming 0.15.3 that lose or stall input after a worker restart.

Both were found by the restart tests (a worker SIGKILLed mid-stream, then restarted) and
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
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

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


def apply() -> None:
    """Install the fixes (idempotent)."""
    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush  # type: ignore[method-assign]
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
