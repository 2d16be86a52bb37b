"""The account agent's natural batching, without Kafka: batches, acks, back-pressure, and
events held back for the order across topics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from loyalty.agents.batching import Batcher
from loyalty.streams.ordering import CoPartitionedOrder

DEADLINE_S = 5.0


class FakeEvent:
    def __init__(self, number: int) -> None:
        self.message = number
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class Committer:
    """Stands in for ``AccountProcessor.process``: each batch waits for ``release`` and
    returns one output acknowledgement per batch, resolved by the test."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.output_acks: list[asyncio.Future[Any]] = []
        self.fail = False
        self.crashed_with: BaseException | None = None

    async def crash(self, error: BaseException) -> None:
        self.crashed_with = error

    async def __call__(self, messages: list[Any]) -> list[asyncio.Future[Any]]:
        self.batches.append(list(messages))
        await self.release.wait()
        if self.fail:
            raise RuntimeError("changelog unavailable")
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.output_acks.append(ack)
        return [ack]


async def until(condition: Any) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), DEADLINE_S)


def test_messages_arriving_during_a_commit_form_the_next_batch() -> None:
    async def scenario() -> None:
        committer = Committer()
        batcher = Batcher(committer, max_size=100, on_failure=committer.crash)
        events = [FakeEvent(n) for n in range(6)]
        await batcher.add(events[0])
        await until(lambda: len(committer.batches) == 1)
        for event in events[1:]:
            await batcher.add(event)
        committer.release.set()
        await until(lambda: len(committer.batches) == 2)
        assert committer.batches == [[0], [1, 2, 3, 4, 5]]
        # Nothing is acked before its batch's outputs are acknowledged.
        assert not any(event.acked for event in events)
        await until(lambda: len(committer.output_acks) == 2)
        committer.output_acks[0].set_result(None)
        await until(lambda: events[0].acked)
        assert not any(event.acked for event in events[1:])
        committer.output_acks[1].set_result(None)
        await until(lambda: all(event.acked for event in events))
        batcher.stop()

    asyncio.run(scenario())


def test_a_full_batch_holds_the_stream_back_until_the_committer_takes_it() -> None:
    async def scenario() -> None:
        committer = Committer()
        batcher = Batcher(committer, max_size=3, on_failure=committer.crash)
        await batcher.add(FakeEvent(0))
        await until(lambda: len(committer.batches) == 1)
        await batcher.add(FakeEvent(1))
        await batcher.add(FakeEvent(2))
        blocked = asyncio.ensure_future(batcher.add(FakeEvent(3)))
        await asyncio.sleep(0)
        assert not blocked.done()
        committer.release.set()
        await asyncio.wait_for(blocked, DEADLINE_S)
        await until(lambda: len(committer.batches) == 2)
        assert committer.batches[1] == [1, 2, 3]
        batcher.stop()

    asyncio.run(scenario())


def test_a_failed_commit_crashes_the_worker_and_acks_nothing() -> None:
    async def scenario() -> None:
        committer = Committer()
        committer.fail = True
        batcher = Batcher(committer, max_size=100, on_failure=committer.crash)
        first = FakeEvent(0)
        await batcher.add(first)
        committer.release.set()
        assert batcher.task is not None
        await asyncio.wait({batcher.task}, timeout=DEADLINE_S)
        with pytest.raises(RuntimeError, match="changelog unavailable"):
            await batcher.add(FakeEvent(1))
        assert not first.acked
        assert isinstance(committer.crashed_with, RuntimeError)

    asyncio.run(scenario())


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp: float


class PlacedEvent(FakeEvent):
    def __init__(self, topic: str, offset: int, timestamp: float) -> None:
        super().__init__(0)
        self.message = Message(topic, 0, offset, timestamp)  # type: ignore[assignment]


def ordered_batcher(
    committer: Committer, lagging: set[str], idle_ms: float
) -> tuple[Batcher, list[list[Any]]]:
    """A batcher ordering topics ``a`` and ``b``; ``lagging`` names the topics whose
    partition has records still to come. Returns it and the batches it processed."""
    batches: list[list[Any]] = []

    async def process(messages: list[Any]) -> list[asyncio.Future[Any]]:
        batches.append(list(messages))
        return []

    order = CoPartitionedOrder(("a", "b"), idle_ms, lambda event: event.message)
    batcher = Batcher(
        process,
        max_size=100,
        on_failure=committer.crash,
        order=order,
        lagging=lambda topic, partition, received: topic in lagging,
    )
    return batcher, batches


def test_an_event_held_for_another_topic_is_neither_processed_nor_acked_until_it_goes():
    async def scenario() -> None:
        lagging = {"a"}
        batcher, batches = ordered_batcher(Committer(), lagging, idle_ms=60_000)
        later = PlacedEvent("b", 5, 2.0)
        await batcher.add(later)
        assert batcher.order is not None
        await until(lambda: batcher.order is not None and batcher.order.held == 1)
        assert batches == [] and not later.acked
        earlier = PlacedEvent("a", 9, 1.0)
        lagging.clear()
        await batcher.add(earlier)
        await until(lambda: later.acked)
        assert batches == [[earlier.message, later.message]]
        assert earlier.acked
        batcher.stop()

    asyncio.run(scenario())


def test_held_events_go_once_the_topic_catches_up_without_delivering_anything():
    async def scenario() -> None:
        lagging = {"a"}
        batcher, batches = ordered_batcher(Committer(), lagging, idle_ms=60_000)
        event = PlacedEvent("b", 5, 2.0)
        await batcher.add(event)
        await until(lambda: batcher.order is not None and batcher.order.held == 1)
        lagging.clear()  # e.g. only a transaction marker was left to fetch
        await until(lambda: event.acked)
        assert batches == [[event.message]]
        batcher.stop()

    asyncio.run(scenario())


def test_a_wait_that_runs_out_lets_the_held_events_go():
    async def scenario() -> None:
        batcher, batches = ordered_batcher(Committer(), {"a"}, idle_ms=20)
        event = PlacedEvent("b", 5, 2.0)
        await batcher.add(event)
        await until(lambda: event.acked)
        assert batches == [[event.message]]
        assert batcher.order is not None and batcher.order.expired == 1
        batcher.stop()

    asyncio.run(scenario())
