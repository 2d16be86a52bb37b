"""Input event contract v1: what POS terminals and member systems publish.

Values are UTF-8 JSON objects; the Kafka key is the ``member_id``. The JSON Schema files in
``schemas/json/`` describe the same contract for integrators in other languages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

SALE = "sale"
REFUND = "refund"
TRANSACTION_TYPES = (SALE, REFUND)


@dataclass(frozen=True, slots=True)
class Transaction:
    """One POS fuel transaction (topic ``loyalty.transactions``)."""

    transaction_id: str
    member_id: str
    station_id: str
    occurred_at: datetime
    """Event time, always timezone-aware."""
    fuel_type: str
    liters: Decimal
    """Exact decimal of the JSON number, so points never suffer binary rounding."""
    amount: Decimal
    type: str = SALE
    currency: str = "EUR"
    original_transaction_id: str | None = None
    coupon_codes: tuple[str, ...] = ()


SIGNUP = "signup"
PROFILE_UPDATED = "profile_updated"
NEWSLETTER_SUBSCRIBED = "newsletter_subscribed"
CONSENTS_CHANGED = "consents_changed"
ERASE = "erase"
MEMBER_EVENT_TYPES = (SIGNUP, PROFILE_UPDATED, NEWSLETTER_SUBSCRIBED, CONSENTS_CHANGED, ERASE)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """One member event (topic ``loyalty.members``). Absent optional fields stay unchanged."""

    event_id: str
    member_id: str
    type: str
    occurred_at: datetime
    birth_date: date | None = None
    locale: str | None = None
    referral_code: str | None = None
    """The code a new member typed at signup."""
    marketing_consent: bool | None = None
    """``consents.marketing`` when present."""
    email: str | None = None
    phone: str | None = None


ACCEPTED = "accepted"
SELF_REFERRAL = "self_referral"
UNKNOWN_REFERRAL_CODE = "unknown_referral_code"
REFERRER_ERASED = "referrer_erased"
REFEREE = "referee"
REFERRER = "referrer"


@dataclass(frozen=True, slots=True)
class ReferralOutcome:
    """Internal command (topic ``loyalty.member-commands``): how a referral claim ended,
    for one side of it. Sent by the referral agent to the member's own partition."""

    member_id: str
    """The member this command is for (the referee or the referrer)."""
    role: str
    """``referee`` (the new member) or ``referrer`` (the code's owner)."""
    signup_event_id: str
    """The signup that typed the code: the id every output of the referral derives from."""
    code: str
    status: str
    """``accepted``, ``self_referral``, ``unknown_referral_code`` or ``referrer_erased``."""
    occurred_at: datetime
    """Event time of the signup."""


REDEMPTION_REQUEST = "request"
FULFILLED = "fulfilled"
CANCELLED = "cancelled"
REDEMPTION_TYPES = (REDEMPTION_REQUEST, FULFILLED, CANCELLED)


@dataclass(frozen=True, slots=True)
class RedemptionMessage:
    """One message of topic ``loyalty.redemptions`` (key ``request_id``): a member asking
    for a reward (``request``: member_id, reward_id and quantity are set), or the station
    reporting it ``fulfilled`` or ``cancelled`` (they are None)."""

    type: str
    request_id: str
    station_id: str
    occurred_at: datetime
    member_id: str | None = None
    reward_id: str | None = None
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class RedemptionStep:
    """Internal command (topic ``loyalty.member-commands``): one step of a redemption for
    the member's partition, sent by the redemption's coordinator (``core.saga``)."""

    step: str
    """``hold``, ``confirm``, ``reject``, ``fulfilled`` or ``cancel``."""
    request_id: str
    member_id: str
    reward_id: str
    quantity: int
    points: int
    station_id: str
    requested_at: str
    occurred_at: datetime
    """Event time of the message that caused this step."""
    reason: str | None = None
    """Why the coordinator rejects it (``reject``)."""
    per_member_limit: int | None = None
    reward_name: dict[str, str] | None = None
    """The reward's display name by locale, for the member's notification."""
