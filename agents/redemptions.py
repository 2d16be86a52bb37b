"""The redemption agent: a redemption's coordinator and the stock of the rewards.

It reads three co-partitioned topics: ``loyalty.redemptions`` (requests, fulfilments and
cancellations from stations, key request_id), ``loyalty.redemption-steps`` (the replies of
the member's and the reward's partitions, and misplaced station messages forwarded to
their request's partition, key request_id) and ``loyalty.stock-commands`` (reservations
and returns, key reward_id). It keeps the ``redemption_requests`` and ``reward_stock``
tables and commits its batches like the account agent (``agents.batching``): a step's
state change is in the changelog before the step messages it sends. The transitions are
the pure functions of ``core.saga``; the catalog comes from the worker's
catalog view.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any

import faust

from loyalty.agents.accounts import PROCESSING_ERROR, Clock, wall_clock_ms
from loyalty.agents.batching import (
    REJECTIONS,
    Batch,
    Committer,
    batched_agent,
    check_outputs,
    check_state,
)
from loyalty.core import saga
from loyalty.core.catalog import CatalogView
from loyalty.schemas.decode import (
    decode_redemption,
    decode_saga_reply,
    decode_stock_command,
    load_object,
)
from loyalty.schemas.events import REDEMPTION_REQUEST
from loyalty.schemas.state import (
    RedemptionRequest,
    RewardStock,
    decode_request,
    decode_stock,
    encode_request,
    encode_stock,
)
from loyalty.streams import metrics
from loyalty.streams.partitioning import check_placement, owner_partition
from loyalty.streams.settings import Settings
from loyalty.streams.topics import Topics, saga_message
from loyalty.tables.definitions import Tables, read


class RedemptionProcessor:
    """Everything the agent does to a batch of messages; the agent only iterates.

    Each message has one failure boundary, like the account agent's: a message that fails
    anywhere (decoding, a saga rule, encoding its table value, serialising its steps) is
    dead-lettered and leaves nothing else in the batch. The engine's own messages (stock
    steps, replies, forwarded station messages) are validated like inputs and must sit on
    their key's partition (``wrong_partition``)."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        tables: Tables,
        catalog: saga.Catalog,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self.requests = tables.redemption_requests
        self.stock = tables.reward_stock
        self.committer = Committer(
            settings.app_id, {table.name: table for table in (self.requests, self.stock)}
        )
        self.names = settings.topics
        self.topics = topics

    async def process(self, messages: Sequence[Any]) -> list[Awaitable[Any]]:
        """Handle a batch of Faust messages, in order, and commit it; returns the
        acknowledgements of its outputs, still to be awaited."""
        started = time.perf_counter()
        now_ms = self.clock()
        batch = Batch()
        pending: dict[tuple[str, bytes], Any] = {}
        """This batch's new values, by (table, key): read before the stored ones."""
        for message in messages:
            try:
                self._handle(message, batch, pending, now_ms)
            except REJECTIONS as error:
                batch.dead_letter(
                    self.names.deadletter, message, error.reason, error.message, now_ms
                )
            except Exception as error:  # noqa: BLE001 - a bug must not stop the worker
                text = f"{type(error).__name__}: {error}"
                batch.dead_letter(self.names.deadletter, message, PROCESSING_ERROR, text, now_ms)
        output_acks = await self.committer.commit(batch)
        metrics.PROCESSING_SECONDS.observe((time.perf_counter() - started) / len(messages))
        return output_acks

    def _handle(
        self, message: Any, batch: Batch, pending: dict[tuple[str, bytes], Any], now_ms: int
    ) -> None:
        partitions = self.settings.partitions
        if message.topic == self.names.stock_commands:
            step = decode_stock_command(message.value)
            reward_id = step["reward_id"]
            key = check_placement(message.key, reward_id, message.partition, partitions)
            stock = self._read(pending, self.stock, message.partition, key, decode_stock)
            new_stock, steps = saga.apply_stock_step(
                stock or RewardStock(), step, self.catalog.get(reward_id)
            )
            self._apply(batch, pending, message, self.stock, key, stock, new_stock, steps)
            return
        if message.topic == self.names.redemption_steps:
            value = load_object(message.value, self.settings.max_event_bytes)
            if "step" in value:
                reply = decode_saga_reply(value)
                request_id = reply["request_id"]
                key = check_placement(message.key, request_id, message.partition, partitions)
                self._reply(message, key, reply, batch, pending)
                return
        self._station_message(message, batch, pending, now_ms)

    def _station_message(
        self, message: Any, batch: Batch, pending: dict[tuple[str, bytes], Any], now_ms: int
    ) -> None:
        not_after_ms = now_ms + self.settings.max_future_skew_s * 1000
        redemption = decode_redemption(
            message.value, self.settings.max_event_bytes, not_after_ms=not_after_ms
        )
        partitions = self.settings.partitions
        if message.topic == self.names.redemption_steps:  # forwarded by the engine
            key = check_placement(message.key, redemption.request_id, message.partition, partitions)
        else:
            key = redemption.request_id.encode()
            owner = owner_partition(key, partitions)
            if message.partition != owner:  # forwarded to its request's partition, unchanged
                batch.unordered.append((self.names.redemption_steps, key, message.value, owner))
                batch.counts[message.topic, "rerouted"] += 1
                return
        request = self._read(pending, self.requests, message.partition, key, decode_request)
        if redemption.type == REDEMPTION_REQUEST:
            new, steps = saga.coordinate_request(request, redemption, self.catalog)
        else:
            new, steps = saga.coordinate_station(request, redemption, self.catalog)
        self._apply(batch, pending, message, self.requests, key, request, new, steps)

    def _reply(
        self,
        message: Any,
        key: bytes,
        step: dict[str, Any],
        batch: Batch,
        pending: dict[tuple[str, bytes], Any],
    ) -> None:
        request = self._read(pending, self.requests, message.partition, key, decode_request)
        if request is None:
            raise saga.RejectedStationMessage(
                saga.UNKNOWN_REQUEST, f"a reply for unknown request {step['request_id']!r}"
            )
        new, steps = saga.coordinate_reply(request, step["request_id"], step, self.catalog)
        self._apply(batch, pending, message, self.requests, key, request, new, steps)

    @staticmethod
    def _read(
        pending: dict[tuple[str, bytes], Any], table: Any, partition: int, key: bytes, decode: Any
    ) -> Any:
        if (table.name, key) in pending:
            return pending[table.name, key]
        value = read(table, partition, key)
        return None if value is None else decode(value)

    def _apply(
        self,
        batch: Batch,
        pending: dict[tuple[str, bytes], Any],
        message: Any,
        table: Any,
        key: bytes,
        old: RedemptionRequest | RewardStock | None,
        new: RedemptionRequest | RewardStock,
        steps: list[saga.Step],
    ) -> None:
        """Encode a message's outcome, then hand it to the batch: nothing reaches the batch
        if anything fails before."""
        records = check_outputs([saga_message(self.settings, step) for step in steps])
        encoded = None
        if new != old:
            value = encode_request(new) if isinstance(new, RedemptionRequest) else encode_stock(new)
            encoded = check_state(value, self.settings.max_state_bytes)
        if encoded is not None:
            pending[table.name, key] = new
            batch.change(table.name, message.partition, key, encoded)
        batch.counts[message.topic, "processed"] += 1
        batch.outputs.extend(records)


def register(app: faust.App, processor: RedemptionProcessor, catalog: CatalogView) -> None:
    """Attach the redemption agent to ``app``; it starts once ``catalog`` has read the
    catalog (else a request for a reward not read yet would be rejected as unknown)."""
    batched_agent(
        app,
        processor.topics.redemption_inputs,
        "loyalty.process_redemptions",
        processor.process,
        processor.committer,
        processor.settings.batch_max,
        ready=lambda: catalog.ready,
    )
