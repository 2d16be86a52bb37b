"""The order in which a worker applies one member's records from several input topics.

Kafka keeps the order of one topic-partition only. A member's records arrive on several
co-partitioned topics (transactions, member events, their forwards, member commands, the
daily job), all at the member's partition number p, and Faust hands records of different
topic-partitions over in its own round-robin order. As Kafka Streams' ``PartitionGroup``
does for a task's inputs, the records received for each partition number p are released in
order of their Kafka timestamp, equal timestamps by the rank of their topic (its place in
``topics``), and records of one topic-partition always in their offset order (only heads
are compared). While a topic-partition of p with no record buffered may have records not
received yet (the caller's ``lagging`` says so), nothing more of p is released: it could
jump ahead of them. Such a wait lasts at most ``max_idle_ms``; past it the records of p
go on without that topic-partition, which is not waited for again until it delivers a
record or has nothing outstanding.

Pure: plain values in, plain values out; time comes in as an argument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar


class Placed(Protocol):
    """Where a record was read, as Faust's messages say it."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> float: ...


Item = TypeVar("Item")

Lagging = Callable[[str, int, "int | None"], bool]
"""``(topic, partition, offset of the last record received or None)``: whether that
topic-partition may have records not received yet, to be waited for (True while unknown)."""


class _Partition(Generic[Item]):
    """What the order keeps of one partition number, by topic rank (the last queue: records
    of topics outside the ranking, in the order received, never waited for)."""

    __slots__ = ("queues", "received", "idle_until")

    def __init__(self, topics: int) -> None:
        self.queues: list[deque[Item]] = [deque() for _ in range(topics + 1)]
        """Records received and not released, in the order received (offset order)."""
        self.received: list[int | None] = [None] * topics
        """Offset of the last record received."""
        self.idle_until: list[float | None] = [None] * topics
        """When the wait for a lagging topic-partition ends (``_EXPIRED``: not waited for)."""


class CoPartitionedOrder(Generic[Item]):
    """Buffers received records and releases them in the order above.

    ``placed`` maps an item to its record (``Placed``); ``topics`` are the co-partitioned
    topics, highest rank first; ``max_idle_ms`` 0 never waits (timestamp order among the
    records already received only).
    """

    def __init__(
        self,
        topics: Sequence[str],
        max_idle_ms: float,
        placed: Callable[[Item], Placed],
    ) -> None:
        self.topics = tuple(topics)
        self.rank = {topic: rank for rank, topic in enumerate(self.topics)}
        self.max_idle_ms = max_idle_ms
        self.placed = placed
        self.partitions: dict[int, _Partition[Item]] = {}
        self.held = 0
        """Records buffered now."""
        self.holding: set[int] = set()
        """Partition numbers with records buffered."""
        self.wake_at_ms: float | None = None
        """While records are held: the earliest end of a wait holding them."""
        self.expired = 0
        """Waits that ended without the records they waited for (counted once each)."""
        self.waiting_since: dict[int, float] = {}
        """By partition number, when the wait holding its records began."""
        self.waited_ms: list[float] = []
        """How long each wait that ended lasted (the caller takes them)."""

    def release(self, received: Iterable[Item], now_ms: float, lagging: Lagging) -> list[Item]:
        """Take the ``received`` items (in the order they came), return those to apply now, in
        order; the others stay held (``held``, ``wake_at_ms``)."""
        placed = self.placed
        rank = self.rank
        others = len(self.topics)
        partitions = self.partitions
        holding = self.holding
        count = 0
        for item in received:
            record = placed(item)
            number = record.partition
            partition = partitions.get(number)
            if partition is None:
                partition = partitions[number] = _Partition(others)
            partition.queues[rank.get(record.topic, others)].append(item)
            holding.add(number)
            count += 1
        if count:
            for number in holding:
                partition = partitions[number]
                for index in range(others):
                    queue = partition.queues[index]
                    if queue:  # it has records: not waited for, a later wait starts afresh
                        partition.received[index] = placed(queue[-1]).offset
                        partition.idle_until[index] = None
        self.held += count
        self.wake_at_ms = None
        ready: list[Item] = []
        waiting_since = self.waiting_since
        for number in list(holding):
            drained = self._drain(number, partitions[number], now_ms, lagging, ready)
            if drained:
                holding.discard(number)
            if drained is None:
                waiting_since.setdefault(number, now_ms)
            elif number in waiting_since:
                self.waited_ms.append(now_ms - waiting_since.pop(number))
        self.held -= len(ready)
        return ready

    def _drain(
        self,
        number: int,
        partition: _Partition[Item],
        now_ms: float,
        lagging: Lagging,
        ready: list[Item],
    ) -> bool | None:
        """Move the records of partition ``number`` that may go now to ``ready``; True if
        none is left, None if the rest waits."""
        while True:
            heads = [queue for queue in partition.queues if queue]
            if not heads:
                return True
            if self._waits(number, partition, now_ms, lagging):
                return None
            if len(heads) == 1:  # the usual case: one topic-partition has records
                ready.extend(heads[0])
                heads[0].clear()
                return True
            # Earliest head first, until a topic-partition runs out (it may lag).
            key = self._head_key
            while True:
                queue = min(heads, key=key)
                ready.append(queue.popleft())
                if not queue:
                    break

    def _head_key(self, queue: deque[Item]) -> tuple[float, int]:
        record = self.placed(queue[0])
        timestamp = record.timestamp
        return (0.0 if timestamp is None else timestamp), self.rank.get(
            record.topic, len(self.rank)
        )

    def _waits(
        self, number: int, partition: _Partition[Item], now_ms: float, lagging: Lagging
    ) -> bool:
        """Whether partition ``number`` must wait for a topic-partition with nothing
        buffered."""
        if self.max_idle_ms <= 0:
            return False
        queues = partition.queues
        idle_until = partition.idle_until
        for index, topic in enumerate(self.topics):
            if queues[index]:
                continue
            if not lagging(topic, number, partition.received[index]):
                idle_until[index] = None
                continue
            until = idle_until[index]
            if until is None:
                until = idle_until[index] = now_ms + self.max_idle_ms
            if now_ms < until:
                if self.wake_at_ms is None or until < self.wake_at_ms:
                    self.wake_at_ms = until
                return True
            if until != _EXPIRED:
                idle_until[index] = _EXPIRED
                self.expired += 1
        return False


_EXPIRED = float("-inf")
"""``idle_until`` of a topic-partition whose wait ran out (not waited for again until it
delivers a record or is found caught up)."""
