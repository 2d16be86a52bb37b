"""The account agent: everything keyed by member (POS transactions and member events).

The agent handles the messages that arrived while the previous batch was being committed
(up to ``LOYALTY_BATCH_MAX``) as one batch:

1. each message is decoded, routed to its owner partition and applied to its member's
   state by the pure rules, in order; a member's state is read once per batch;
2. the new states are produced to the table's changelog, and the acknowledgements awaited;
3. then written to the local RocksDB with their changelog offsets;
4. then the outputs (ledger, rewards, notifications, referral messages) are produced and
   acknowledged;
5. and only then are the input offsets acknowledged to Faust, which commits them later.

So every output stands for a state change that is already durable in the changelog. After
a crash at any step the replayed input finds either the old state (nothing of it was
emitted) or the new one, and then re-emits the same outputs with the same ids: at least
once, never credited twice, and never an output whose state change was lost.

Forwards to the owner partition and dead letters depend on no state; they go out with the
changelog records.
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
from faust.types import EventT

from agents import metrics
from agents.deadletters import dead_letter
from schemas.decode import (
    InvalidEvent,
    decode_daily_command,
    decode_member_event,
    decode_referral_outcome,
    decode_transaction,
)
from schemas.events import ERASE, MemberEvent, Transaction
from schemas.state import MemberState, decode_state, encode_state
from streams.partitioning import owner_partition
from streams.program import Program
from streams.rewards import (
    Outputs,
    render_daily,
    render_erasure,
    render_member_event,
    render_referral,
    render_transaction,
)
from streams.settings import Settings
from streams.topics import Topics
from tables.accounts import (
    MEMBER_ERASED,
    Outcome,
    RejectedTransaction,
    apply_daily,
    apply_member_event,
    apply_referral_outcome,
    apply_transaction,
    erased_key,
    remember_ledger,
)
from tables.definitions import (
    Tables,
    changelog_topic_name,
    partition_items,
    read,
    write_local,
)

PROCESSING_ERROR = "processing_error"
DAILY_CHUNK = 1000
"""Members of a daily job committed together (the job for a big partition is chunked)."""

Clock = Callable[[], int]
"""Wall-clock epoch milliseconds; injected so tests can fix it."""

Record = tuple[str, bytes | None, bytes, int | None]
"""A message to produce: topic, key, value, partition (None: by key)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Batch:
    """What a batch of input messages changes and emits, held until it is committed."""

    def __init__(self) -> None:
        self.states: dict[bytes, MemberState] = {}
        """Members read or changed in this batch, by member key."""
        self.changes: dict[tuple[str, int], dict[bytes, MemberState | bytes | None]] = {}
        """New values by (table name, partition) and key; None deletes."""
        self.unordered: list[Record] = []
        """Forwards and dead letters: sent with the changelog records."""
        self.outputs: list[Record] = []
        """Sent once the state changes are acknowledged."""
        self.counts: Counter[tuple[str, str]] = Counter()
        """Input events by (topic, outcome)."""
        self.ledger: Counter[str] = Counter()
        self.points: Counter[str] = Counter()
        self.enrolled = 0

    def change(self, table: str, partition: int, key: bytes, value: Any) -> None:
        self.changes.setdefault((table, partition), {})[key] = value


class AccountProcessor:
    """Everything the agent does to a batch of messages; the agent only iterates."""

    def __init__(
        self,
        settings: Settings,
        program: Program,
        topics: Topics,
        tables: Tables,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.program = program
        self.clock = clock
        self.producer: Any = None
        """Faust's Kafka producer, bound by :func:`register`."""
        self.tables = {
            table.name: table for table in (tables.member_to_state, tables.erased_members)
        }
        self.members = tables.member_to_state.name
        self.erased = tables.erased_members.name
        names = settings.topics
        # input topic -> (is a transaction, topic to forward misplaced messages to or None)
        self.routes = {
            names.transactions: (True, names.rekeyed),
            names.rekeyed: (True, None),
            names.members: (False, names.members_rekeyed),
            names.members_rekeyed: (False, None),
        }
        self.names = names
        self.topics = topics

    async def process(self, messages: Sequence[Any]) -> list[Awaitable[Any]]:
        """Handle a batch of Faust messages, in order, and commit it; returns the
        acknowledgements of its outputs, still to be awaited."""
        started = time.perf_counter()
        now_ms = self.clock()
        batch = Batch()
        for message in messages:
            if message.topic == self.names.daily:
                batch = await self._run_daily(message, batch, now_ms)
                continue
            try:
                self._handle(message, batch, now_ms)
            except (InvalidEvent, RejectedTransaction) as error:
                self._reject(batch, message, error.reason, error.message, now_ms)
            except Exception as error:  # noqa: BLE001 - a bug must not stop the worker
                text = f"{type(error).__name__}: {error}"
                self._reject(batch, message, PROCESSING_ERROR, text, now_ms)
        output_acks = await self._commit(batch)
        metrics.PROCESSING_SECONDS.observe((time.perf_counter() - started) / len(messages))
        done_s = time.time()
        for message in messages:
            if message.timestamp:
                metrics.LATENCY_SECONDS.observe(max(0.0, done_s - message.timestamp))
        return output_acks

    def _handle(self, message: Any, batch: Batch, now_ms: int) -> None:
        if message.topic == self.names.member_commands:
            self._apply_referral_outcome(message, batch, now_ms)
            return
        is_transaction, forward_to = self.routes[message.topic]
        max_bytes = self.settings.max_event_bytes
        event: Transaction | MemberEvent = (
            decode_transaction(message.value, max_bytes)
            if is_transaction
            else decode_member_event(message.value, max_bytes)
        )
        member_key = event.member_id.encode()
        owner = owner_partition(member_key, self.settings.partitions)
        if forward_to is not None and message.partition != owner:
            batch.unordered.append((forward_to, member_key, message.value, owner))
            batch.counts[message.topic, "rerouted"] += 1
            return
        partition = message.partition
        state = self._state(batch, partition, member_key)
        outputs: Outputs
        if isinstance(event, Transaction):
            new_state, outcome = apply_transaction(state, event, self.program, now_ms)
            outputs = render_transaction(event, outcome.applied, new_state, self.program)
        elif event.type == ERASE:
            self._erase(batch, partition, member_key, event, state, now_ms)
            batch.counts[message.topic, "processed"] += 1
            return
        else:
            new_state, outcome = apply_member_event(state, event, self.program, now_ms)
            outputs = render_member_event(event, outcome.applied, new_state, self.program)
        self._record(batch, message.topic, partition, member_key, new_state, outcome, outputs)

    def _apply_referral_outcome(self, message: Any, batch: Batch, now_ms: int) -> None:
        command = decode_referral_outcome(message.value)
        member_key = command.member_id.encode()
        state = self._state(batch, message.partition, member_key)
        new_state, outcome = apply_referral_outcome(state, command, self.program, now_ms)
        outputs = render_referral(command, outcome.applied, new_state, self.program)
        self._record(
            batch, message.topic, message.partition, member_key, new_state, outcome, outputs
        )

    def _state(self, batch: Batch, partition: int, member_key: bytes) -> MemberState:
        """The member's current state (this batch's changes included); refuses an erased
        member."""
        hashed = erased_key(member_key)
        pending = batch.changes.get((self.erased, partition), {})
        if hashed in pending or read(self.tables[self.erased], partition, hashed) is not None:
            raise RejectedTransaction(MEMBER_ERASED, "the member was erased (GDPR)")
        state = batch.states.get(member_key)
        if state is None:
            state = decode_state(read(self.tables[self.members], partition, member_key))
            batch.states[member_key] = state
        return state

    def _record(
        self,
        batch: Batch,
        topic: str,
        partition: int,
        member_key: bytes,
        new_state: MemberState,
        outcome: Outcome,
        outputs: Outputs,
    ) -> None:
        if outcome.duplicate:
            batch.counts[topic, "duplicate"] += 1
        else:
            new_state = remember_ledger(new_state, outputs.ledger)
            batch.states[member_key] = new_state
            batch.change(self.members, partition, member_key, new_state)
            batch.counts[topic, "processed"] += 1
            for entry in outputs.ledger:
                batch.ledger[entry.reason] += 1
                batch.points[entry.reason] += abs(entry.delta)
            batch.enrolled += outcome.applied.enrolled
        self._emit(batch, member_key, outputs)

    def _erase(
        self,
        batch: Batch,
        partition: int,
        member_key: bytes,
        event: MemberEvent,
        state: MemberState,
        now_ms: int,
    ) -> None:
        """Forget the member: a tombstone in the member table, the code marked erased in the
        referral registry, and only a hash of the id kept to refuse later events."""
        if state.referral_code:
            self._referral_op(batch, {"op": "erase", "code": state.referral_code})
        batch.states.pop(member_key, None)
        batch.change(self.members, partition, member_key, None)
        batch.change(self.erased, partition, erased_key(member_key), b"1")
        reward = orjson.dumps(render_erasure(event, now_ms, self.program))
        batch.outputs.append((self.names.rewards, member_key, reward, None))

    async def _run_daily(self, message: Any, batch: Batch, now_ms: int) -> Batch:
        """The daily job for every member of the command's partition, committed in chunks;
        returns the batch to go on with."""
        try:
            day = decode_daily_command(message.value)
        except InvalidEvent as error:
            self._reject(batch, message, error.reason, error.message, now_ms)
            return batch
        await self._commit_all(batch)  # the job reads the stored states
        partition = message.partition
        chunk = Batch()
        members = partition_items(self.tables[self.members], partition)
        for index, (member_key, value) in enumerate(members):
            state = decode_state(value)
            member_id = member_key.decode()
            new_state, outcome = apply_daily(state, day, self.program, now_ms, member_id)
            if outcome is not None:
                outputs = render_daily(member_id, day, outcome.applied, new_state, self.program)
                if not outcome.duplicate:
                    new_state = remember_ledger(new_state, outputs.ledger)
                self._emit(chunk, member_key, outputs)
            if new_state is not state:
                chunk.change(self.members, partition, member_key, new_state)
            if index % DAILY_CHUNK == DAILY_CHUNK - 1:
                await self._commit_all(chunk)
                chunk = Batch()
        chunk.counts[message.topic, "processed"] += 1
        return chunk

    def _emit(self, batch: Batch, member_key: bytes, outputs: Outputs) -> None:
        add = batch.outputs.append
        for entry in outputs.ledger:
            add((self.names.ledger, member_key, orjson.dumps(entry), None))
        add((self.names.rewards, member_key, orjson.dumps(outputs.reward), None))
        for notification in outputs.notifications:
            add((self.names.notifications, member_key, orjson.dumps(notification), None))
        for change in outputs.segments:
            add((self.names.segments, member_key, orjson.dumps(change), None))
        for op in outputs.referral_ops:
            self._referral_op(batch, op)

    def _referral_op(self, batch: Batch, op: dict[str, Any]) -> None:
        code = op["code"].encode()
        partition = owner_partition(code, self.settings.partitions)
        batch.outputs.append((self.names.referrals, code, orjson.dumps(op), partition))

    def _reject(self, batch: Batch, message: Any, reason: str, text: str, now_ms: int) -> None:
        # An erased member's later events are refused without keeping their personal data.
        redact = reason == MEMBER_ERASED
        record = orjson.dumps(dead_letter(message, reason, text, now_ms, redact))
        key = None if redact else message.key
        batch.unordered.append((self.names.deadletter, key, record, None))
        batch.counts[message.topic, "deadlettered"] += 1
        metrics.DEADLETTERS.labels(reason).inc()

    async def _commit_all(self, batch: Batch) -> None:
        for ack in await self._commit(batch):
            await ack

    async def _commit(self, batch: Batch) -> list[Awaitable[Any]]:
        """Changelog first, acknowledged; then the local state; then the outputs, whose
        acknowledgements are returned."""
        send = self.producer.send
        written = []
        for (table, partition), changes in batch.changes.items():
            topic = changelog_topic_name(self.settings.app_id, table)
            encoded = {
                key: encode_state(value) if isinstance(value, MemberState) else value
                for key, value in changes.items()
            }
            acks = [
                await send(topic, key, value, partition, None, None)
                for key, value in encoded.items()
            ]
            written.append((table, partition, encoded, acks))
        unordered = [await send(*record, None, None) for record in batch.unordered]
        for table, partition, encoded, acks in written:
            offset = max([(await ack).offset for ack in acks])
            write_local(self.tables[table], partition, encoded, offset)
        outputs = [await send(*record, None, None) for record in batch.outputs]
        self._count(batch)
        return unordered + outputs

    @staticmethod
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
    with no timer. Events are acknowledged to Faust only once their batch is committed."""

    def __init__(
        self,
        process: Callable[[list[Any]], Awaitable[list[Awaitable[Any]]]],
        max_size: int,
        on_failure: Callable[[BaseException], Awaitable[Any]],
    ) -> None:
        self.process = process
        self.max_size = max_size
        self.on_failure = on_failure
        """Called with the error that stopped the committer (the worker crashes on it: its
        uncommitted input is processed again after a restart)."""
        self.pending: list[EventT] = []
        self.wakeup = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.task: asyncio.Task[None] | None = None

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
                while self.pending:
                    events, self.pending = self.pending, []
                    self.room.set()
                    output_acks = await self.process([event.message for event in events])
                    if unfinished is not None:
                        await _finish(*unfinished)
                    unfinished = events, output_acks
                if unfinished is not None:
                    await _finish(*unfinished)
        except Exception as error:
            await self.on_failure(error)
            raise
        finally:
            self.room.set()  # never leave the stream waiting on a dead committer

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def _finish(events: list[EventT], output_acks: list[Awaitable[Any]]) -> None:
    for ack in output_acks:
        await ack
    for event in events:
        event.ack()


def register(app: faust.App, processor: AccountProcessor) -> None:
    """Attach the account agent to ``app``."""

    @app.agent(processor.topics.member_inputs, name="loyalty.process_member_inputs")
    async def process_member_inputs(stream: faust.StreamT) -> None:
        processor.producer = app.producer
        batcher = Batcher(processor.process, processor.settings.batch_max, app.crash)
        try:
            async for event in cast(Stream, stream).noack().events():
                await batcher.add(event)
        finally:
            batcher.stop()
