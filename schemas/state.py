"""Table value records: what the engine remembers per member.

These values live in changelog topics, so their encoding is a contract too: a compact JSON
object with short keys, where a new field always gets a default (old values keep decoding).
Everything one event changes for a member is in one value, so a single changelog write
applies it atomically: the balance and the record of which events were applied can never
disagree after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """What applying one input event did: enough to re-emit its outputs identically."""

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
    """True when this event enrolled the member."""
    refund_of: str | None = None
    """For a refund: the transaction_id of the sale it refunds."""
    details: dict[str, Any] = field(default_factory=dict)
    """Outcomes beyond the ledger: tier used and tier change, coupon results, missions."""


@dataclass(frozen=True, slots=True)
class Coupon:
    code: str
    benefit: str
    """``bonus_points`` or ``discount_percent``."""
    value: int
    source: str
    """Why it was issued, e.g. ``newsletter``."""
    issued_s: int
    expires_s: int
    used_by: str | None = None
    """transaction_id of the sale that used it."""


@dataclass(frozen=True, slots=True)
class Profile:
    locale: str | None = None
    birth_date: str | None = None
    marketing_consent: bool = False
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's account."""

    balance: int = 0
    enrolled_at: str | None = None
    """Event time of enrolment (ISO-8601), None until the first sale or signup."""
    welcome_given: bool = False
    applied: dict[str, AppliedEvent] = field(default_factory=dict)
    """Transactions applied within the retention window, by transaction_id."""
    member_events: dict[str, AppliedEvent] = field(default_factory=dict)
    """Member events applied within the retention window, by event_id."""
    profile: Profile = field(default_factory=Profile)
    referral_code: str | None = None
    tier: str | None = None
    """Current tier name; None means the program's lowest tier."""
    earned_by_day: dict[int, int] = field(default_factory=dict)
    """Earning credits net of refund reversals by day ordinal (program time zone)."""
    mission_awarded_s: dict[str, int] = field(default_factory=dict)
    """Event time of each mission's last award."""
    coupons: dict[str, Coupon] = field(default_factory=dict)
    newsletter_coupon_issued: bool = False
    lots: dict[int, int] = field(default_factory=dict)
    """Unspent points by the day (ordinal) they were earned; spent and expired oldest first."""
    birthday_year: int | None = None
    """Year of the last birthday bonus."""
    last_daily: str | None = None
    """Date (YYYY-MM-DD) of the last daily job applied."""
    referred: bool = False
    """True once a signup of this member claimed a referral code (once per member)."""


def _encode_applied(applied: AppliedEvent) -> list[Any]:
    return [
        applied.occurred_s,
        applied.processed_ms,
        applied.balance_after,
        str(applied.liters),
        [list(entry) for entry in applied.entries],
        str(applied.refunded_liters),
        applied.enrolled,
        applied.refund_of,
        applied.details,
    ]


def _decode_applied(item: list[Any]) -> AppliedEvent:
    return AppliedEvent(
        occurred_s=item[0],
        processed_ms=item[1],
        balance_after=item[2],
        liters=Decimal(item[3]),
        entries=tuple((reason, delta) for reason, delta in item[4]),
        refunded_liters=Decimal(item[5]),
        enrolled=item[6],
        refund_of=item[7],
        details=item[8] if len(item) > 8 else {},
    )


def _encode_coupon(coupon: Coupon) -> list[Any]:
    return [
        coupon.benefit,
        coupon.value,
        coupon.source,
        coupon.issued_s,
        coupon.expires_s,
        coupon.used_by,
    ]


def encode_state(state: MemberState) -> bytes:
    profile = state.profile
    return orjson.dumps(
        {
            "v": STATE_VERSION,
            "b": state.balance,
            "e": state.enrolled_at,
            "w": state.welcome_given,
            "t": {key: _encode_applied(value) for key, value in state.applied.items()},
            "m": {key: _encode_applied(value) for key, value in state.member_events.items()},
            "p": [
                profile.locale,
                profile.birth_date,
                profile.marketing_consent,
                profile.email,
                profile.phone,
            ],
            "r": state.referral_code,
            "tier": state.tier,
            "earn": {str(day): points for day, points in state.earned_by_day.items()},
            "mis": state.mission_awarded_s,
            "c": {code: _encode_coupon(coupon) for code, coupon in state.coupons.items()},
            "nl": state.newsletter_coupon_issued,
            "lots": {str(day): points for day, points in state.lots.items()},
            "by": state.birthday_year,
            "d": state.last_daily,
            "rf": state.referred,
        }
    )


def decode_state(value: bytes | None) -> MemberState:
    """Decode a table value; ``None`` (an unknown member) decodes to a fresh state."""
    if value is None:
        return MemberState()
    raw = orjson.loads(value)
    profile = raw.get("p") or [None, None, False, None, None]
    return MemberState(
        balance=raw["b"],
        enrolled_at=raw.get("e"),
        welcome_given=raw.get("w", False),
        applied={key: _decode_applied(item) for key, item in raw.get("t", {}).items()},
        member_events={key: _decode_applied(item) for key, item in raw.get("m", {}).items()},
        profile=Profile(*profile),
        referral_code=raw.get("r"),
        tier=raw.get("tier"),
        earned_by_day={int(day): points for day, points in raw.get("earn", {}).items()},
        mission_awarded_s=raw.get("mis", {}),
        coupons={code: Coupon(code, *fields) for code, fields in raw.get("c", {}).items()},
        newsletter_coupon_issued=raw.get("nl", False),
        lots={int(day): points for day, points in raw.get("lots", {}).items()},
        birthday_year=raw.get("by"),
        last_daily=raw.get("d"),
        referred=raw.get("rf", False),
    )
