"""Pure state transition of a member account: (state, transaction, now) -> (state, outcome).

Idempotent by ``transaction_id``: a transaction already applied returns the state unchanged
and the stored outcome, so the agent can re-emit the very same outputs (same ids) after a
redelivery without crediting twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from schemas.events import SALE, Transaction
from schemas.outputs import FUEL_POINTS, REFUND_REVERSAL, WELCOME_BONUS
from schemas.state import AppliedTransaction, MemberState
from streams.program import Program
from streams.rules import fuel_points, reversal_points

# Dead-letter reasons produced here.
UNKNOWN_ORIGINAL_TRANSACTION = "unknown_original_transaction"
STALE_TRANSACTION = "stale_transaction"

_DAY_S = 86_400


class RejectedTransaction(ValueError):
    """A well-formed transaction the member's state cannot accept."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: AppliedTransaction
    duplicate: bool
    """True when the transaction had been applied before (nothing changed now)."""


def apply_transaction(
    state: MemberState, transaction: Transaction, program: Program, processed_ms: int
) -> tuple[MemberState, Outcome]:
    """Apply a sale or refund to a member's state."""
    previous = state.applied.get(transaction.transaction_id)
    if previous is not None:
        return state, Outcome(applied=previous, duplicate=True)

    occurred_s = int(transaction.occurred_at.timestamp())
    window_s = program.refund_window_days * _DAY_S
    if occurred_s < _newest_occurred_s(state) - window_s:
        raise RejectedTransaction(
            STALE_TRANSACTION,
            f"transaction is older than the {program.refund_window_days}-day window of the "
            "member's latest activity, so a duplicate could no longer be recognised",
        )
    if transaction.type == SALE:
        state, applied = _apply_sale(state, transaction, program, occurred_s, processed_ms)
    else:
        state, applied = _apply_refund(state, transaction, occurred_s, processed_ms)
    keep_from_s = max(_newest_occurred_s(state), occurred_s) - window_s
    applied_by_id = {
        transaction_id: record
        for transaction_id, record in state.applied.items()
        if record.occurred_s >= keep_from_s
    }
    applied_by_id[transaction.transaction_id] = applied
    return replace(state, applied=applied_by_id), Outcome(applied=applied, duplicate=False)


def _newest_occurred_s(state: MemberState) -> int:
    return max((record.occurred_s for record in state.applied.values()), default=0)


def _apply_sale(
    state: MemberState,
    sale: Transaction,
    program: Program,
    occurred_s: int,
    processed_ms: int,
) -> tuple[MemberState, AppliedTransaction]:
    entries: list[tuple[str, int]] = []
    earned = fuel_points(sale.liters, program.fuel_points).points
    if earned:
        entries.append((FUEL_POINTS, earned))
    enrolled = state.enrolled_at is None
    welcome_given = state.welcome_given
    if not welcome_given and program.welcome_bonus_points:
        entries.append((WELCOME_BONUS, program.welcome_bonus_points))
        welcome_given = True
    balance = state.balance + sum(delta for _, delta in entries)
    applied = AppliedTransaction(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=balance,
        liters=sale.liters,
        entries=tuple(entries),
        enrolled=enrolled,
    )
    new_state = replace(
        state,
        balance=balance,
        enrolled_at=sale.occurred_at.isoformat() if enrolled else state.enrolled_at,
        welcome_given=welcome_given,
    )
    return new_state, applied


def _apply_refund(
    state: MemberState, refund: Transaction, occurred_s: int, processed_ms: int
) -> tuple[MemberState, AppliedTransaction]:
    original_id = refund.original_transaction_id or ""
    original = state.applied.get(original_id)
    if original is None or original.refund_of is not None:
        raise RejectedTransaction(
            UNKNOWN_ORIGINAL_TRANSACTION,
            f"original_transaction_id {original_id!r} is not a sale of member "
            f"{refund.member_id!r} within the refund window",
        )
    credited = sum(delta for _, delta in original.entries if delta > 0)
    points, liters = reversal_points(
        credited, original.liters, original.refunded_liters, refund.liters
    )
    entries = ((REFUND_REVERSAL, -points),) if points else ()
    balance = state.balance - points
    applied = AppliedTransaction(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=balance,
        liters=liters,
        entries=entries,
        refund_of=original_id,
    )
    updated_original = replace(original, refunded_liters=original.refunded_liters + liters)
    new_state = replace(
        state, balance=balance, applied={**state.applied, original_id: updated_original}
    )
    return new_state, applied
