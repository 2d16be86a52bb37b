"""Two fixes for faust-streaming 0.15.3 that lose or stall input after a worker restart.

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
"""

from __future__ import annotations

from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

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


def apply() -> None:
    """Install both fixes (idempotent)."""
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
