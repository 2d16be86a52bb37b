"""Table value records: what the engine remembers per member.

These values live in changelog topics, so their encoding is a contract too: a compact JSON
object with short keys, where a new field always gets a default (old values keep decoding).
Everything one event changes for a member is in one value, so a single changelog write
applies it atomically: the balance and the record of which events were applied can never
disagree after a crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any, TypeVar, overload

import orjson

STATE_VERSION = 1

_T = TypeVar("_T")


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
    fingerprint: str | None = None
    """For a transaction or member event: a short hash of its content
    (``core.accounts.content_fingerprint``), so a repeat of its id with other content is
    told from an identical one. None for other keys, and in events stored before it."""
    locale: str | None = None
    """The locale the member's notifications were wanted in (profile, else the program's
    default) when the event was applied: a replay renders in it. None when not recorded."""
    consent: bool | None = None
    """The member's marketing consent when the event was applied (marketing notifications
    of a replay follow it). None when not recorded."""


StoredEvent = list[Any]
StoredLedgerEntry = list[Any]
"""An :class:`AppliedEvent` in its stored form (see ``_encode_applied``)."""

# Positions in a stored event that the log reads without decoding the event.
_OCCURRED_S = 0
_LITERS = 3
_REFUNDED_LITERS = 5
_REFUND_OF = 7
_occurred_s = itemgetter(_OCCURRED_S)


class AppliedLog(Mapping[str, AppliedEvent]):
    """The applied events of a retention window by id, kept in their stored form.

    A member's state is decoded and re-encoded for every event, but only one or two of its
    remembered events are ever looked up; so the log keeps them as stored, decodes an event
    when it is looked up, and is encoded back as it is (untouched events byte for byte).
    The log is immutable: every change returns a new log.

    Two logs are equal when their stored forms are equal.
    """

    __slots__ = ("_stored",)

    def __init__(self, stored: dict[str, StoredEvent] | None = None) -> None:
        """A log of events in their stored form, as parsed (kept as it is, not copied)."""
        self._stored: dict[str, StoredEvent] = {} if stored is None else stored

    @property
    def stored(self) -> dict[str, StoredEvent]:
        """The events in their stored form, in the order they were added (do not mutate)."""
        return self._stored

    def __getitem__(self, event_id: str) -> AppliedEvent:
        return _decode_applied(self._stored[event_id])

    @overload
    def get(self, event_id: str, /) -> AppliedEvent | None: ...
    @overload
    def get(self, event_id: str, /, default: AppliedEvent | _T) -> AppliedEvent | _T: ...
    def get(self, event_id: str, /, default: object = None) -> object:
        # Mapping.get would look up through an exception, and most lookups miss.
        item = self._stored.get(event_id)
        return default if item is None else _decode_applied(item)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AppliedLog):
            return self._stored == other._stored
        return super().__eq__(other)

    def __repr__(self) -> str:
        return f"AppliedLog({self._stored!r})"

    def newest_occurred_s(self) -> int:
        """Event time of the newest event, 0 for an empty log."""
        return max(map(_occurred_s, self._stored.values()), default=0)

    def sales_after(self, after_s: int) -> list[tuple[int, Decimal]]:
        """(event time, litres net of the refunds applied to it) of the sales (refunds left
        out) that occurred after ``after_s``; only their litres are decoded."""
        return [
            (item[_OCCURRED_S], Decimal(item[_LITERS]) - Decimal(item[_REFUNDED_LITERS]))
            for item in self._stored.values()
            if item[_OCCURRED_S] > after_s and item[_REFUND_OF] is None
        ]

    def since(self, keep_from_s: int) -> AppliedLog:
        """The log without the events that occurred before ``keep_from_s``."""
        if min(map(_occurred_s, self._stored.values()), default=keep_from_s) >= keep_from_s:
            return self  # the usual case, found without a loop in Python
        return AppliedLog(
            {
                event_id: item
                for event_id, item in self._stored.items()
                if item[_OCCURRED_S] >= keep_from_s
            }
        )

    def with_event(self, event_id: str, applied: AppliedEvent) -> AppliedLog:
        """The log with ``applied`` added, or replacing the event of the same id (which
        keeps its place)."""
        return AppliedLog({**self._stored, event_id: _encode_applied(applied)})


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


Bucket = list[Any]
"""A day of sales in the rolling stats (see ``core.stats``)."""


@dataclass(frozen=True, slots=True)
class Stats:
    """Rolling consumption stats: day buckets and lifetime totals (see ``core.stats``)."""

    buckets: tuple[Bucket, ...] = ()
    """Ascending by day; only days within the longest window of the newest sale."""
    last_sale_s: int | None = None
    lifetime_points: int = 0
    """Points credited over the member's life, net of refund reversals (expiry and
    redemptions do not reduce it)."""
    lifetime_ml: int = 0
    lifetime_cents: int = 0
    lifetime_sales: int = 0


NO_STATS = Stats()


@dataclass(frozen=True, slots=True)
class Redemption:
    """One redemption request as the member's partition knows it."""

    reward_id: str
    quantity: int
    points: int
    """Points it costs: the reward's ``cost_points`` x quantity at request time."""
    status: str
    """``held`` (points set aside, stock not yet reserved), ``confirmed``, ``rejected``,
    ``fulfilled`` or ``cancelled``."""
    reason: str | None
    """Why it was rejected."""
    station_id: str
    requested_at: str
    """Event time of the request (ISO-8601)."""
    updated_at: str
    """Event time of the step that set the status (ISO-8601)."""


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member's account."""

    balance: int = 0
    enrolled_at: str | None = None
    """Event time of enrolment (ISO-8601), None until the first sale or signup."""
    welcome_given: bool = False
    applied: AppliedLog = field(default_factory=AppliedLog)
    """Transactions applied within the retention window, by transaction_id."""
    member_events: AppliedLog = field(default_factory=AppliedLog)
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
    referral_claim: tuple[str, str] | None = None
    """The signup that claimed a referral code and the code it typed (normalised), as
    ``(signup_event_id, code)``: a referee's referral outcome must match it."""
    stats: Stats = NO_STATS
    segments: tuple[str, ...] = ()
    """The program's segments the member is in, sorted, as last evaluated."""
    redemptions: dict[str, Redemption] = field(default_factory=dict)
    """By request_id: the pending ones and the most recent others (bounded, see
    ``core.accounts``)."""
    recent_ledger: tuple[StoredLedgerEntry, ...] = ()
    """The member's most recent ledger entries, oldest first (bounded: see
    ``core.accounts.LEDGER_HISTORY``), as ``[entry_id, delta, balance_after, reason,
    source_event_id, program_version, occurred_at, processed_at]``."""


def _encode_applied(applied: AppliedEvent) -> StoredEvent:
    stored = [
        applied.occurred_s,
        applied.processed_ms,
        applied.balance_after,
        str(applied.liters),
        [list(entry) for entry in applied.entries],
        str(applied.refunded_liters),
        applied.enrolled,
        applied.refund_of,
        applied.details,
        applied.fingerprint,
        applied.locale,
        applied.consent,
    ]
    # Trailing fields left unset are left out: an event without them stays 9 items long.
    while len(stored) > 9 and stored[-1] is None:
        stored.pop()
    return stored


def _decode_applied(item: StoredEvent) -> AppliedEvent:
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
        fingerprint=item[9] if len(item) > 9 else None,
        locale=item[10] if len(item) > 10 else None,
        consent=item[11] if len(item) > 11 else None,
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
    encoded: dict[str, Any] = {
        "v": STATE_VERSION,
        "b": state.balance,
        "e": state.enrolled_at,
        "w": state.welcome_given,
        "t": state.applied.stored,
        "m": state.member_events.stored,
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
    # Fields added later are left out while empty, so older values re-encode byte for byte.
    if state.stats != NO_STATS:
        stats = state.stats
        encoded["st"] = [
            stats.buckets,
            stats.last_sale_s,
            stats.lifetime_points,
            stats.lifetime_ml,
            stats.lifetime_cents,
            stats.lifetime_sales,
        ]
    if state.segments:
        encoded["sg"] = state.segments
    if state.redemptions:
        encoded["rd"] = {
            request_id: [
                r.reward_id,
                r.quantity,
                r.points,
                r.status,
                r.reason,
                r.station_id,
                r.requested_at,
                r.updated_at,
            ]
            for request_id, r in state.redemptions.items()
        }
    if state.recent_ledger:
        encoded["lh"] = state.recent_ledger
    if state.referral_claim is not None:
        encoded["rc"] = state.referral_claim
    return orjson.dumps(encoded)


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
        applied=AppliedLog(raw.get("t")),
        member_events=AppliedLog(raw.get("m")),
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
        stats=_decode_stats(raw.get("st")),
        segments=tuple(raw.get("sg", ())),
        redemptions={
            request_id: Redemption(*fields) for request_id, fields in raw.get("rd", {}).items()
        },
        recent_ledger=tuple(raw.get("lh", ())),
        referral_claim=_decode_claim(raw.get("rc")),
    )


def _decode_claim(stored: list[str] | None) -> tuple[str, str] | None:
    return None if stored is None else (stored[0], stored[1])


def _decode_stats(stored: list[Any] | None) -> Stats:
    if stored is None:
        return NO_STATS
    buckets, last_sale_s, points, ml, cents, sales = stored
    return Stats(tuple(buckets), last_sale_s, points, ml, cents, sales)


@dataclass(frozen=True, slots=True)
class RedemptionRequest:
    """A redemption's saga as its coordinator (the partition of its request_id) keeps it."""

    member_id: str
    reward_id: str
    quantity: int
    points: int
    station_id: str
    requested_at: str
    """Event time of the request (ISO-8601)."""
    status: str
    """``holding`` (asked the member's partition to set the points aside), ``reserving``
    (asked the reward's partition for the stock), ``confirmed``, ``rejected``, ``fulfilled``
    or ``cancelled``."""
    reason: str | None = None
    """Why it was rejected."""


def encode_request(request: RedemptionRequest) -> bytes:
    return orjson.dumps(
        [
            request.member_id,
            request.reward_id,
            request.quantity,
            request.points,
            request.station_id,
            request.requested_at,
            request.status,
            request.reason,
        ]
    )


def decode_request(value: bytes) -> RedemptionRequest:
    return RedemptionRequest(*orjson.loads(value))


@dataclass(frozen=True, slots=True)
class RewardStock:
    """What the partition deciding a reward's stock remembers: the units it reserved, and
    each request it answered (so a redelivered step gets the same answer)."""

    reserved: int = 0
    """Units reserved and not returned; the live stock is the catalog's ``stock`` less this."""
    requests: dict[str, list[Any]] = field(default_factory=dict)
    """request_id -> [quantity, outcome]: ``reserved``, ``returned``, or the rejection reason."""


def encode_stock(stock: RewardStock) -> bytes:
    """``{"reserved": n, "requests": {...}}``: the catalog view of every worker reads
    ``reserved`` from the table's changelog."""
    return orjson.dumps({"reserved": stock.reserved, "requests": stock.requests})


def decode_stock(value: bytes | None) -> RewardStock:
    if value is None:
        return RewardStock()
    raw = orjson.loads(value)
    return RewardStock(raw["reserved"], raw["requests"])
