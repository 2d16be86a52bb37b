"""Input records and an event runner shared by the pure unit tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from loyalty.core.accounts import Outcome, apply_member_event, apply_transaction
from loyalty.core.program import load_program
from loyalty.schemas.events import MemberEvent, RedemptionStep, Transaction
from loyalty.schemas.state import MemberState

PROGRAM = load_program(Path("program/default.toml"))
NOW_MS = 1_795_000_000_000
MEMBER = "m-1"


def sale(tx_id: str, liters: str, occurred_at: datetime, **fields: Any) -> Transaction:
    """A transaction of ``MEMBER`` (a sale unless ``type`` says otherwise)."""
    return Transaction(
        transaction_id=tx_id,
        member_id=MEMBER,
        station_id="st-1",
        occurred_at=occurred_at,
        fuel_type="diesel",
        liters=Decimal(liters),
        amount=Decimal(10),
        **fields,
    )


def hold(occurred_at: datetime, points: int = 100, **fields: Any) -> RedemptionStep:
    """A redemption's ``hold`` step for ``MEMBER``: one coffee, request ``q1``."""
    return RedemptionStep(
        step="hold",
        request_id="q1",
        member_id=MEMBER,
        reward_id="coffee",
        quantity=1,
        points=points,
        station_id="st-1",
        requested_at=occurred_at.isoformat(),
        occurred_at=occurred_at,
        **fields,
    )


def member_event(event_id: str, kind: str, occurred_at: datetime, **fields: Any) -> MemberEvent:
    return MemberEvent(
        event_id=event_id, member_id=MEMBER, type=kind, occurred_at=occurred_at, **fields
    )


def run(
    state: MemberState, *events: Transaction | MemberEvent
) -> tuple[MemberState, list[Outcome]]:
    """Apply events in order with the default program; the state and every outcome."""
    outcomes = []
    for event in events:
        if isinstance(event, Transaction):
            state, outcome = apply_transaction(state, event, PROGRAM, NOW_MS)
        else:
            state, outcome = apply_member_event(state, event, PROGRAM, NOW_MS)
        outcomes.append(outcome)
    return state, outcomes
