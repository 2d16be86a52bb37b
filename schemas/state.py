"""Table value records: what the engine remembers per member.

These values live in changelog topics, so their encoding is a contract too: a compact JSON
object with short keys, where a new field always gets a default (old values keep decoding).
Everything one event changes for a member is in one value, so a single changelog write
applies it atomically: the balance and the record of which transactions were applied can
never disagree after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import orjson

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class AppliedTransaction:
    """What applying one transaction did: enough to re-emit its outputs identically."""

    occurred_s: int
    """Event time, epoch seconds (for the retention window)."""
    processed_ms: int
    balance_after: int
    liters: Decimal
    entries: tuple[tuple[str, int], ...]
    """Ledger entries as (reason, delta), in emission order."""
    refunded_liters: Decimal = Decimal(0)
    """Litres of this sale already refunded (refunds are capped by the sale's litres)."""
    enrolled: bool = False
    """True when this transaction enrolled the member."""
    refund_of: str | None = None
    """For a refund: the transaction_id of the sale it refunds."""


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's account."""

    balance: int = 0
    enrolled_at: str | None = None
    """Event time of enrolment (ISO-8601), None until the first sale or signup."""
    welcome_given: bool = False
    applied: dict[str, AppliedTransaction] = field(default_factory=dict)
    """Transactions applied within the retention window, by transaction_id."""


def encode_state(state: MemberState) -> bytes:
    return orjson.dumps(
        {
            "v": STATE_VERSION,
            "b": state.balance,
            "e": state.enrolled_at,
            "w": state.welcome_given,
            "t": {
                transaction_id: [
                    applied.occurred_s,
                    applied.processed_ms,
                    applied.balance_after,
                    str(applied.liters),
                    [list(entry) for entry in applied.entries],
                    str(applied.refunded_liters),
                    applied.enrolled,
                    applied.refund_of,
                ]
                for transaction_id, applied in state.applied.items()
            },
        }
    )


def decode_state(value: bytes | None) -> MemberState:
    """Decode a table value; ``None`` (an unknown member) decodes to a fresh state."""
    if value is None:
        return MemberState()
    raw = orjson.loads(value)
    return MemberState(
        balance=raw["b"],
        enrolled_at=raw.get("e"),
        welcome_given=raw.get("w", False),
        applied={
            transaction_id: AppliedTransaction(
                occurred_s=item[0],
                processed_ms=item[1],
                balance_after=item[2],
                liters=Decimal(item[3]),
                entries=tuple((reason, delta) for reason, delta in item[4]),
                refunded_liters=Decimal(item[5]),
                enrolled=item[6],
                refund_of=item[7],
            )
            for transaction_id, item in raw.get("t", {}).items()
        },
    )
