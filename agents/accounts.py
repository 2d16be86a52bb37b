"""The account agent: everything keyed by member (POS transactions and member events).

Per message: decode, route to the owning partition, apply the pure transition, store the
new state, emit the outputs.

At-least-once: the table write and the outputs of a message are handed to the producer
before its offset can be committed (Faust flushes the producer before every commit); a
redelivered message finds its event already applied and re-emits the same outputs (same
ids), so nothing is lost and nothing is credited twice.

Outputs are sent with ``force=True``: Faust would otherwise hold them back until the next
offset commit (up to ``broker_commit_interval``, seconds), which the latency target forbids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson

from agents import metrics
from agents.deadletters import send_dead_letter
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
)
from tables.definitions import Tables, partition_items

PROCESSING_ERROR = "processing_error"

Clock = Callable[[], int]
"""Wall-clock epoch milliseconds; injected so tests can fix it."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AccountProcessor:
    """Everything the agent does to one message; the agent only iterates."""

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
        self.topics = topics
        self.member_to_state = tables.member_to_state
        self.erased_members = tables.erased_members
        self.clock = clock
        names = settings.topics
        # input topic -> (is a transaction, topic to forward misplaced messages to or None)
        self.routes = {
            names.transactions: (True, topics.rekeyed),
            names.rekeyed: (True, None),
            names.members: (False, topics.members_rekeyed),
            names.members_rekeyed: (False, None),
        }
        self.daily_topic = names.daily
        self.commands_topic = names.member_commands

    async def process(self, message: Any) -> None:
        started = time.perf_counter()
        now_ms = self.clock()
        try:
            await self._process(message, now_ms)
        except (InvalidEvent, RejectedTransaction) as error:
            await self._reject(message, error.reason, error.message, now_ms)
        except Exception as error:  # noqa: BLE001 - a bug must not stop the worker
            await self._reject(
                message, PROCESSING_ERROR, f"{type(error).__name__}: {error}", now_ms
            )
        metrics.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        if message.timestamp:
            metrics.LATENCY_SECONDS.observe(max(0.0, time.time() - message.timestamp))

    async def _process(self, message: Any, now_ms: int) -> None:
        if message.topic == self.daily_topic:
            await self._run_daily(message, now_ms)
            return
        if message.topic == self.commands_topic:
            await self._apply_referral_outcome(message, now_ms)
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
            await forward_to.send(key=member_key, value=message.value, partition=owner, force=True)
            metrics.EVENTS.labels(message.topic, "rerouted").inc()
            return
        self._refuse_erased(member_key)

        state = decode_state(self.member_to_state.get(member_key))
        outputs: Outputs
        if isinstance(event, Transaction):
            new_state, outcome = apply_transaction(state, event, self.program, now_ms)
            outputs = render_transaction(event, outcome.applied, new_state, self.program)
        elif event.type == ERASE:
            await self._erase(member_key, event, state, now_ms)
            metrics.EVENTS.labels(message.topic, "processed").inc()
            return
        else:
            new_state, outcome = apply_member_event(state, event, self.program, now_ms)
            outputs = render_member_event(event, outcome.applied, new_state, self.program)
        if not outcome.duplicate:
            self.member_to_state[member_key] = encode_state(new_state)
        await self._emit(member_key, outputs)
        self._count(message.topic, outcome, outputs)

    async def _apply_referral_outcome(self, message: Any, now_ms: int) -> None:
        command = decode_referral_outcome(message.value)
        member_key = command.member_id.encode()
        self._refuse_erased(member_key)
        state = decode_state(self.member_to_state.get(member_key))
        new_state, outcome = apply_referral_outcome(state, command, self.program, now_ms)
        if not outcome.duplicate:
            self.member_to_state[member_key] = encode_state(new_state)
        outputs = render_referral(command, outcome.applied, new_state, self.program)
        await self._emit(member_key, outputs)
        self._count(message.topic, outcome, outputs)

    def _refuse_erased(self, member_key: bytes) -> None:
        if self.erased_members.get(erased_key(member_key)) is not None:
            raise RejectedTransaction(MEMBER_ERASED, "the member was erased (GDPR)")

    async def _erase(
        self, member_key: bytes, event: MemberEvent, state: MemberState, now_ms: int
    ) -> None:
        """Forget the member: tombstones in the member table, the code marked erased in the
        referral registry, and only a hash of the id kept to refuse later events."""
        if state.referral_code:
            op = {"op": "erase", "code": state.referral_code}
            await self._send_referral_op(op)
        self.member_to_state.pop(member_key, None)
        self.erased_members[erased_key(member_key)] = b"1"
        await self.topics.rewards.send(
            key=member_key,
            value=orjson.dumps(render_erasure(event, now_ms, self.program)),
            force=True,
        )

    def _count(self, topic: str, outcome: Outcome, outputs: Outputs) -> None:
        if outcome.duplicate:
            metrics.EVENTS.labels(topic, "duplicate").inc()
            return
        metrics.EVENTS.labels(topic, "processed").inc()
        for entry in outputs.ledger:
            metrics.LEDGER_ENTRIES.labels(entry.reason).inc()
            metrics.POINTS.labels(entry.reason).inc(abs(entry.delta))
        if outcome.applied.enrolled:
            metrics.MEMBERS_ENROLLED.inc()

    async def _run_daily(self, message: Any, now_ms: int) -> None:
        """The daily job for every member of the command's partition."""
        day = decode_daily_command(message.value)
        members = partition_items(self.member_to_state, message.partition)
        for index, (member_key, value) in enumerate(members):
            state = decode_state(value)
            new_state, outcome = apply_daily(state, day, self.program, now_ms)
            if new_state is not state:
                self.member_to_state[member_key] = encode_state(new_state)
            if outcome is not None:
                member_id = member_key.decode()
                await self._emit(
                    member_key,
                    render_daily(member_id, day, outcome.applied, new_state, self.program),
                )
            if index % 1000 == 999:
                await asyncio.sleep(0)  # let the worker serve others on big partitions
        metrics.EVENTS.labels(message.topic, "processed").inc()

    async def _emit(self, member_key: bytes, outputs: Outputs) -> None:
        for entry in outputs.ledger:
            await self.topics.ledger.send(key=member_key, value=orjson.dumps(entry), force=True)
        await self.topics.rewards.send(
            key=member_key, value=orjson.dumps(outputs.reward), force=True
        )
        for notification in outputs.notifications:
            await self.topics.notifications.send(
                key=member_key, value=orjson.dumps(notification), force=True
            )
        for op in outputs.referral_ops:
            await self._send_referral_op(op)

    async def _send_referral_op(self, op: dict[str, Any]) -> None:
        code = op["code"].encode()
        partition = owner_partition(code, self.settings.partitions)
        await self.topics.referrals.send(
            key=code, value=orjson.dumps(op), partition=partition, force=True
        )

    async def _reject(self, message: Any, reason: str, text: str, now_ms: int) -> None:
        # An erased member's later events are refused without keeping their personal data.
        redact = reason == MEMBER_ERASED
        await send_dead_letter(self.topics.deadletter, message, reason, text, now_ms, redact)


def register(app: faust.App, processor: AccountProcessor) -> None:
    """Attach the account agent to ``app``."""

    @app.agent(processor.topics.member_inputs, name="loyalty.process_member_inputs")
    async def process_member_inputs(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await processor.process(event.message)
