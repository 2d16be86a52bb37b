"""The account agent: everything keyed by member (POS transactions and member events).

The agent handles the messages that arrived while the previous batch was being committed
(up to ``LOYALTY_BATCH_MAX``) as one batch: each message is decoded, routed to its owner
partition and applied to its member's state by the pure rules, in order (a member's state
is read once per batch); then the batch is committed as ``agents.batching`` describes
(changelog acknowledged, local state, outputs, input offsets). After a crash the replayed
input re-emits the same outputs with the same ids: at least once, never credited twice,
and never an output whose state change was lost.

Besides transactions and member events, the agent applies the commands other partitions
send a member: referral outcomes, and the steps of a redemption (``core.saga``).

Forwards to the owner partition and dead letters depend on no state; they go out with the
changelog records.

Each record has one failure boundary: whatever fails while it is decoded, applied, its new
state encoded or its outputs serialised is dead-lettered with a reason (``processing_error``
for an error of the engine itself), the batch keeps nothing else of it, and the worker goes
on with the next record. Records of the internal topics are checked like inputs: a
misplaced one (``wrong_partition``), a referral outcome or redemption step that matches no
claim or hold of the member, are refused.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any

import faust
import orjson

from loyalty.agents.batching import (
    MAX_RECORD_BYTES,
    REJECTIONS,
    Batch,
    Committer,
    Record,
    batched_agent,
    check_outputs,
    check_state,
)
from loyalty.core.accounts import (
    MEMBER_ERASED,
    Outcome,
    RejectedTransaction,
    apply_daily,
    apply_member_event,
    apply_redemption_step,
    apply_referral_outcome,
    apply_transaction,
    erased_key,
    remember_ledger,
)
from loyalty.core.program import Program
from loyalty.core.render import (
    Outputs,
    render_daily,
    render_erasure,
    render_member_event,
    render_redemption,
    render_referral,
    render_transaction,
)
from loyalty.schemas.decode import (
    decode_daily_command,
    decode_member_command,
    decode_member_event,
    decode_transaction,
    latest_daily_date,
)
from loyalty.schemas.events import ERASE, MemberEvent, RedemptionStep, Transaction
from loyalty.schemas.state import MemberState, decode_state, encode_state
from loyalty.streams import metrics
from loyalty.streams.partitioning import check_placement, owner_partition
from loyalty.streams.settings import Settings, TopicNames
from loyalty.streams.topics import Topics, saga_message
from loyalty.tables.definitions import Tables, partition_items, read

PROCESSING_ERROR = "processing_error"
DAILY_CHUNK = 1000
"""Members of a daily job committed together (the job for a big partition is chunked)."""

Clock = Callable[[], int]
"""Wall-clock epoch milliseconds; injected so tests can fix it."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def member_inputs_by_rank(names: TopicNames) -> tuple[str, ...]:
    """The account agent's inputs of a member partition, whose records it applies in order
    of their Kafka timestamps (``streams.ordering``); records with equal timestamps in this
    order: member events, then transactions (each before its forwards), then member commands,
    then the daily job."""
    return (
        names.members,
        names.members_rekeyed,
        names.transactions,
        names.rekeyed,
        names.member_commands,
        names.daily,
    )


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
        self.tables = {
            table.name: table for table in (tables.member_to_state, tables.erased_members)
        }
        self.committer = Committer(settings.app_id, self.tables)
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
        self.order_topics = member_inputs_by_rank(names)

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
            except REJECTIONS as error:
                self._reject(batch, message, error.reason, error.message, now_ms)
            except Exception as error:  # noqa: BLE001 - a bug must not stop the worker
                text = f"{type(error).__name__}: {error}"
                self._reject(batch, message, PROCESSING_ERROR, text, now_ms)
        output_acks = await self.committer.commit(batch)
        metrics.PROCESSING_SECONDS.observe((time.perf_counter() - started) / len(messages))
        done_s = time.time()
        for message in messages:
            if message.timestamp:
                metrics.LATENCY_SECONDS.observe(max(0.0, done_s - message.timestamp))
        return output_acks

    def _handle(self, message: Any, batch: Batch, now_ms: int) -> None:
        if message.topic == self.names.member_commands:
            self._apply_command(message, batch, now_ms)
            return
        is_transaction, forward_to = self.routes[message.topic]
        max_bytes = self.settings.max_event_bytes
        not_after_ms = now_ms + self.settings.max_future_skew_s * 1000
        event: Transaction | MemberEvent = (
            decode_transaction(message.value, max_bytes, not_after_ms=not_after_ms)
            if is_transaction
            else decode_member_event(message.value, max_bytes, not_after_ms=not_after_ms)
        )
        partitions = self.settings.partitions
        partition = message.partition
        if forward_to is None:  # forwarded here by the engine, to the member's own partition
            member_key = check_placement(message.key, event.member_id, partition, partitions)
        else:
            member_key = event.member_id.encode()
            owner = owner_partition(member_key, partitions)
            if partition != owner:
                batch.forward((forward_to, member_key, message.value, owner), message.timestamp)
                batch.counts[message.topic, "rerouted"] += 1
                return
        state = self._state(batch, partition, member_key)
        outputs: Outputs
        if isinstance(event, Transaction):
            new_state, outcome = apply_transaction(state, event, self.program, now_ms)
            outputs = render_transaction(event, outcome.applied, new_state, self.program)
        elif event.type == ERASE:
            self._erase(batch, message.topic, partition, member_key, event, state, now_ms)
            return
        else:
            new_state, outcome = apply_member_event(state, event, self.program, now_ms)
            outputs = render_member_event(event, outcome.applied, new_state, self.program)
        self._record(batch, message.topic, partition, member_key, new_state, outcome, outputs)

    def _apply_command(self, message: Any, batch: Batch, now_ms: int) -> None:
        """A referral outcome or a redemption step sent to this member's partition."""
        command = decode_member_command(message.value)
        partitions = self.settings.partitions
        member_key = check_placement(message.key, command.member_id, message.partition, partitions)
        state = self._state(batch, message.partition, member_key)
        outputs: Outputs
        if isinstance(command, RedemptionStep):
            new_state, outcome = apply_redemption_step(state, command, self.program, now_ms)
            outputs = render_redemption(command, outcome.applied, new_state, self.program)
        else:
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
        if state is None:  # kept in the batch by _record, once the record has succeeded
            state = decode_state(read(self.tables[self.members], partition, member_key))
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
        """Encode the record's outcome, then hand it to the batch: nothing reaches the batch
        if anything fails before."""
        records = self._outputs(member_key, outputs)
        if outcome.duplicate:
            batch.states[member_key] = new_state  # unchanged
            batch.outputs.extend(records)
            batch.counts[topic, "duplicate"] += 1
            return
        new_state = remember_ledger(new_state, outputs.ledger)
        encoded = check_state(encode_state(new_state), self.settings.max_state_bytes)
        batch.states[member_key] = new_state
        batch.change(self.members, partition, member_key, encoded)
        batch.outputs.extend(records)
        batch.counts[topic, "processed"] += 1
        for entry in outputs.ledger:
            batch.ledger[entry.reason] += 1
            batch.points[entry.reason] += abs(entry.delta)
        batch.enrolled += outcome.applied.enrolled

    def _erase(
        self,
        batch: Batch,
        topic: str,
        partition: int,
        member_key: bytes,
        event: MemberEvent,
        state: MemberState,
        now_ms: int,
    ) -> None:
        """Forget the member: a tombstone in the member table, the code marked erased in the
        referral registry, and only a hash of the id kept to refuse later events."""
        records = []
        if state.referral_code:
            records.append(self._referral_op({"op": "erase", "code": state.referral_code}))
        reward = orjson.dumps(render_erasure(event, now_ms, self.program))
        records.append((self.names.rewards, member_key, reward, None))
        check_outputs(records)
        batch.states.pop(member_key, None)
        batch.change(self.members, partition, member_key, None)
        batch.change(self.erased, partition, erased_key(member_key), b"1")
        batch.outputs.extend(records)
        batch.counts[topic, "processed"] += 1

    async def _run_daily(self, message: Any, batch: Batch, now_ms: int) -> Batch:
        """The daily job for every member of the command's partition, committed in chunks;
        returns the batch to go on with."""
        try:
            latest = latest_daily_date(now_ms, self.program.timezone)
            day = decode_daily_command(message.value, latest)
        except REJECTIONS as error:
            self._reject(batch, message, error.reason, error.message, now_ms)
            return batch
        await self.committer.commit_all(batch)  # the job reads the stored states
        partition = message.partition
        chunk = Batch()
        failed = 0
        first_error = ""
        members = partition_items(self.tables[self.members], partition)
        for index, (member_key, value) in enumerate(members):
            try:
                records, encoded = self._daily_member(member_key, value, day, now_ms)
            except Exception as error:  # noqa: BLE001 - one member must not stop the job
                failed += 1
                first_error = first_error or f"{member_key!r}: {type(error).__name__}: {error}"
            else:
                if encoded is not None:
                    chunk.change(self.members, partition, member_key, encoded)
                chunk.outputs.extend(records)
            if index % DAILY_CHUNK == DAILY_CHUNK - 1:
                await self.committer.commit_all(chunk)
                chunk = Batch()
        if failed:
            text = f"the job failed for {failed} member(s) of the partition; first {first_error}"
            self._reject(chunk, message, PROCESSING_ERROR, text, now_ms)
        else:
            chunk.counts[message.topic, "processed"] += 1
        return chunk

    def _daily_member(
        self, member_key: bytes, value: bytes, day: date, now_ms: int
    ) -> tuple[list[Record], bytes | None]:
        """The daily job of one stored member: its outputs, and its new encoded state (None
        when unchanged)."""
        state = decode_state(value)
        member_id = member_key.decode()
        new_state, outcome = apply_daily(state, day, self.program, now_ms, member_id)
        records: list[Record] = []
        if outcome is not None:
            outputs = render_daily(member_id, day, outcome.applied, new_state, self.program)
            if not outcome.duplicate:
                new_state = remember_ledger(new_state, outputs.ledger)
            records = self._outputs(member_key, outputs)
        # A state the job changed is stored whatever its size (LOYALTY_MAX_STATE_BYTES
        # refuses new input, not the upkeep of what is stored) if the changelog takes it.
        encoded = None if new_state is state else encode_state(new_state)
        if encoded is not None:
            check_state(encoded, MAX_RECORD_BYTES)
        return records, encoded

    def _outputs(self, member_key: bytes, outputs: Outputs) -> list[Record]:
        """The records of ``outputs``, serialised and checked (``check_outputs``)."""
        names = self.names
        dumps = orjson.dumps
        records: list[Record] = []
        add = records.append
        for entry in outputs.ledger:
            add((names.ledger, member_key, dumps(entry), None))
        if outputs.reward is not None:
            add((names.rewards, member_key, dumps(outputs.reward), None))
        for notification in outputs.notifications:
            add((names.notifications, member_key, dumps(notification), None))
        for change in outputs.segments:
            add((names.segments, member_key, dumps(change), None))
        for op in outputs.referral_ops:
            add(self._referral_op(op))
        for step in outputs.saga:
            add(saga_message(self.settings, step))
        return check_outputs(records)

    def _referral_op(self, op: dict[str, Any]) -> Record:
        code = op["code"].encode()
        partition = owner_partition(code, self.settings.partitions)
        return (self.names.referrals, code, orjson.dumps(op), partition)

    def _reject(self, batch: Batch, message: Any, reason: str, text: str, now_ms: int) -> None:
        # An erased member's later events are refused without keeping their personal data.
        redact = reason == MEMBER_ERASED
        batch.dead_letter(self.names.deadletter, message, reason, text, now_ms, redact)


def register(app: faust.App, processor: AccountProcessor) -> None:
    """Attach the account agent to ``app``."""
    batched_agent(
        app,
        processor.topics.member_inputs,
        "loyalty.process_member_inputs",
        processor.process,
        processor.committer,
        processor.settings.batch_max,
        order_topics=processor.order_topics,
        max_idle_ms=processor.settings.max_partition_idle_ms,
    )
