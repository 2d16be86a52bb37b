"""Phase 0: the engine's pure per-event work alone, in the bench's own process.

No Kafka, no Faust, no RocksDB: the preload's workload (the member events that issue the
newsletter coupons, then N transactions over 20 days) goes through the same calls the
account agent makes for each transaction: decode the input bytes, decode the member's stored
state, apply the rules, render the outputs and serialise them, encode the new state. States
are kept encoded in a dict, as the table keeps them. Its rate is the ceiling the program's
rules leave one core, whatever the transport.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from loyalty.bench.options import BenchOptions
from loyalty.bench.stats import rate
from loyalty.bench.workload import (
    Mix,
    TransactionGenerator,
    member_events,
    member_ids,
    newsletter_members,
)
from loyalty.core.accounts import RejectedTransaction, apply_member_event, apply_transaction
from loyalty.core.program import Program
from loyalty.core.render import Outputs, render_member_event, render_transaction
from loyalty.schemas.decode import decode_member_event, decode_transaction
from loyalty.schemas.state import decode_state, encode_state

PROCESSED_MS = 1_800_000_000_000
"""A fixed processing time: the rules take time from events; this only stamps outputs."""


@dataclass(frozen=True)
class PurePathResult:
    transactions: int
    rejected: int
    seconds: float
    tx_per_s: float
    us_per_tx: float
    mean_state_bytes: int


def _serialise(outputs: Outputs) -> int:
    size = len(orjson.dumps(outputs.reward)) if outputs.reward is not None else 0
    for record in (*outputs.ledger, *outputs.notifications, *outputs.segments):
        size += len(orjson.dumps(record))
    return size


def run_pure_path(options: BenchOptions, program: Program, max_event_bytes: int) -> PurePathResult:
    members = member_ids(options.members)
    mix = Mix()
    now = datetime.now(UTC)
    first_sale_at = now - timedelta(days=20)
    states: dict[bytes, bytes] = {}
    coupons: dict[str, str] = {}
    events = member_events(
        newsletter_members(members, mix.newsletter_share), first_sale_at - timedelta(days=1), "p"
    )
    for raw in events:
        event = decode_member_event(orjson.dumps(raw), max_event_bytes)
        key = event.member_id.encode()
        state, outcome = apply_member_event(
            decode_state(states.get(key)), event, program, PROCESSED_MS
        )
        states[key] = encode_state(state)
        reward = render_member_event(event, outcome.applied, state, program).reward
        if reward is not None and reward.coupon_issued:
            coupons[event.member_id] = reward.coupon_issued["code"]

    generator = TransactionGenerator(members, coupons, "p", options.seed, mix)
    step = timedelta(days=20) / options.transactions
    inputs = [
        orjson.dumps(generator.next(first_sale_at + step * index))
        for index in range(options.transactions)
    ]
    rejected = 0
    started = time.perf_counter()
    for value in inputs:
        transaction = decode_transaction(value, max_event_bytes)
        key = transaction.member_id.encode()
        try:
            state, outcome = apply_transaction(
                decode_state(states.get(key)), transaction, program, PROCESSED_MS
            )
        except RejectedTransaction:
            rejected += 1
            continue
        _serialise(render_transaction(transaction, outcome.applied, state, program))
        states[key] = encode_state(state)
    seconds = time.perf_counter() - started
    return PurePathResult(
        transactions=len(inputs),
        rejected=rejected,
        seconds=round(seconds, 3),
        tx_per_s=rate(len(inputs), seconds),
        us_per_tx=round(seconds / len(inputs) * 1e6, 1),
        mean_state_bytes=round(sum(map(len, states.values())) / max(1, len(states))),
    )
