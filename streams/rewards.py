"""Pure rendering of the output events of one applied transaction.

Outputs are a function of the transaction and its stored outcome only, so a redelivered
transaction re-emits byte-identical events (same ids, same timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.events import SALE, Transaction
from schemas.outputs import (
    FUEL_POINTS,
    Bonus,
    Breakdown,
    LedgerEntry,
    Multiplier,
    Notification,
    RewardEvent,
)
from schemas.state import AppliedTransaction
from streams.ids import derive_id
from streams.program import Program
from streams.rules import fuel_points

SOURCE_KIND = "transaction"

WELCOME = "welcome"
POINTS_EARNED = "points_earned"
POINTS_REVERSED = "points_reversed"


@dataclass(frozen=True, slots=True)
class Outputs:
    ledger: list[LedgerEntry]
    reward: RewardEvent
    notifications: list[Notification]


def iso_from_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def render_outputs(
    transaction: Transaction, applied: AppliedTransaction, program: Program
) -> Outputs:
    """Ledger entries, reward event and notifications of one applied transaction."""
    source_id = transaction.transaction_id
    member_id = transaction.member_id
    occurred_at = transaction.occurred_at.isoformat()
    processed_at = iso_from_ms(applied.processed_ms)
    points = sum(delta for _, delta in applied.entries)

    ledger = []
    balance = applied.balance_after - points
    for reason, delta in applied.entries:
        balance += delta
        ledger.append(
            LedgerEntry(
                entry_id=derive_id(SOURCE_KIND, source_id, "ledger", reason),
                member_id=member_id,
                delta=delta,
                balance_after=balance,
                reason=reason,
                source_event_id=source_id,
                program_version=program.version,
                occurred_at=occurred_at,
                processed_at=processed_at,
            )
        )

    is_sale = transaction.type == SALE
    reward = RewardEvent(
        reward_id=derive_id(SOURCE_KIND, source_id, "reward"),
        member_id=member_id,
        source_event_id=source_id,
        source_type=transaction.type,
        station_id=transaction.station_id,
        occurred_at=occurred_at,
        processed_at=processed_at,
        program_version=program.version,
        points=points,
        balance_after=applied.balance_after,
        enrolled=applied.enrolled,
        breakdown=_breakdown(transaction, applied, program) if is_sale else None,
        reversal=None
        if is_sale
        else {
            "original_transaction_id": applied.refund_of,
            "requested_liters": float(transaction.liters),
            "refunded_liters": float(applied.liters),
        },
    )

    def notification(kind: str, data: dict[str, object]) -> Notification:
        return Notification(
            notification_id=derive_id(SOURCE_KIND, source_id, "notification", kind),
            member_id=member_id,
            kind=kind,
            locale=program.default_locale,
            occurred_at=occurred_at,
            data=data,
        )

    notifications = []
    if applied.enrolled:
        notifications.append(notification(WELCOME, {"balance": applied.balance_after}))
    if points:
        kind = POINTS_EARNED if points > 0 else POINTS_REVERSED
        notifications.append(
            notification(
                kind,
                {
                    "points": abs(points),
                    "balance": applied.balance_after,
                    "liters": float(transaction.liters),
                    "station_id": transaction.station_id,
                },
            )
        )
    return Outputs(ledger=ledger, reward=reward, notifications=notifications)


def _breakdown(sale: Transaction, applied: AppliedTransaction, program: Program) -> Breakdown:
    earned = fuel_points(sale.liters, program.fuel_points)
    return Breakdown(
        liters=float(sale.liters),
        points_per_liter=float(program.fuel_points.points_per_liter),
        base_points=earned.base_points,
        multipliers=[Multiplier(name, float(factor)) for name, factor in earned.multipliers],
        fuel_points=sum(delta for reason, delta in applied.entries if reason == FUEL_POINTS),
        bonuses=[
            Bonus(reason, delta) for reason, delta in applied.entries if reason != FUEL_POINTS
        ],
    )
