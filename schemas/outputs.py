"""Output event contract v1: what downstream services consume.

Every record carries a deterministic id derived from the input event that caused it, so a
replayed or redelivered input produces the same ids and consumers can de-duplicate on them.
Timestamps are ISO-8601 strings with a UTC offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Ledger reasons (the ``reason`` of a ledger entry).
FUEL_POINTS = "fuel_points"
WELCOME_BONUS = "welcome_bonus"
REFUND_REVERSAL = "refund_reversal"
COUPON_BONUS = "coupon_bonus"
MISSION_BONUS = "mission_bonus"
BIRTHDAY_BONUS = "birthday_bonus"
EXPIRY = "expiry"
REFERRAL_BONUS = "referral_bonus"
REDEMPTION = "redemption"
REDEMPTION_REFUND = "redemption_refund"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One balance change (topic ``loyalty.ledger``); exactly one per change."""

    entry_id: str
    member_id: str
    delta: int
    balance_after: int
    reason: str
    source_event_id: str
    program_version: str
    occurred_at: str
    processed_at: str


@dataclass(frozen=True, slots=True)
class Multiplier:
    name: str
    factor: float


@dataclass(frozen=True, slots=True)
class Bonus:
    reason: str
    points: int


@dataclass(frozen=True, slots=True)
class Breakdown:
    """How the points of one event were computed."""

    liters: float
    points_per_liter: float
    base_points: int
    """floor(liters x points per litre), before any multiplier."""
    multipliers: list[Multiplier]
    fuel_points: int
    """floor(liters x points per litre x every multiplier)."""
    bonuses: list[Bonus]


@dataclass(frozen=True, slots=True)
class RewardEvent:
    """What one input event earned a member (topic ``loyalty.rewards``)."""

    reward_id: str
    member_id: str
    source_event_id: str
    source_type: str
    """``sale``, ``refund``, or the member event type (``signup``, ...)."""
    station_id: str | None
    occurred_at: str
    processed_at: str
    program_version: str
    points: int
    """Sum of this event's ledger deltas."""
    balance_after: int
    enrolled: bool
    """True when this event enrolled the member."""
    breakdown: Breakdown | None = None
    """Earning details of a sale."""
    reversal: dict[str, Any] | None = None
    """Details of a refund: original transaction, refunded and original litres."""
    tier: str | None = None
    """Tier whose multiplier the sale's fuel points used (the tier held before it)."""
    tier_change: dict[str, str] | None = None
    """``{"from": ..., "to": ...}`` when this event changed the member's tier."""
    coupons: list[dict[str, Any]] | None = None
    """Each code presented on a sale: ``code``, ``status`` (``redeemed``, ``unknown_coupon``,
    ``expired_coupon``, ``coupon_used``, ``not_owner``), and ``benefit``/``value`` if redeemed."""
    missions: list[str] | None = None
    """Missions this sale completed."""
    coupon_issued: dict[str, Any] | None = None
    """A coupon this event issued: ``code``, ``benefit``, ``value``, ``expires_at``."""
    referral: dict[str, Any] | None = None
    """A referral's outcome for this member: ``code``, ``status`` (``accepted``,
    ``self_referral``, ``unknown_referral_code``, ``referrer_erased``), ``role``."""
    redemption: dict[str, Any] | None = None
    """A redemption step's outcome: ``request_id``, ``reward_id``, ``quantity``, ``points``,
    ``status`` (``confirmed``, ``rejected``, ``fulfilled``, ``cancelled``) and ``reason``
    (``insufficient_points``, ``out_of_stock``, ``unknown_reward``, ``inactive_reward``,
    ``limit_reached``) when rejected."""


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for notification services (topic ``loyalty.notifications``)."""

    notification_id: str
    member_id: str
    kind: str
    locale: str
    occurred_at: str
    data: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    """Rendered in ``locale`` from the program's templates."""
    body: str = ""


@dataclass(frozen=True, slots=True)
class SegmentChange:
    """A member entering or leaving a segment (topic ``loyalty.segments``)."""

    segment_event_id: str
    member_id: str
    segment: str
    change: str
    """``entered`` or ``left``."""
    occurred_at: str
    """Event time of the change: the sale or member event, or the start of the daily job's
    day for time-driven changes."""
    source_event_id: str
    """The input event (or ``daily:YYYY-MM-DD``) whose evaluation made the change."""
    program_version: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input message (topic ``loyalty.deadletter``), original bytes included
    (cut when too big to carry whole: ``truncated``)."""

    deadletter_id: str
    source_topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key_b64: str | None
    value_b64: str | None
    reason: str
    message: str
    failed_at: str
    key_size: int | None = None
    """Bytes of the original key (None without one, or when redacted)."""
    value_size: int | None = None
    """Bytes of the original value (None without one, or when redacted)."""
    key_sha256: str | None = None
    """SHA-256 of the whole original key, lower-case hex."""
    value_sha256: str | None = None
    """SHA-256 of the whole original value, lower-case hex."""
    truncated: bool = False
    """True when ``key_b64`` or ``value_b64`` holds only a prefix of the original (which
    would not fit the producer limit whole)."""
