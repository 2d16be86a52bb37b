"""An independent model of the default loyalty program, for the scenario test.

Written from the program's published rules (README, program file comments, JSON Schemas),
not from the engine: nothing here imports ``streams``, ``tables``, ``agents`` or
``schemas``. Only the numbers come from the program file, read with ``tomllib``.
Arithmetic is exact: litres are integer centilitres, multipliers are fractions, instants are
epoch seconds, calendar days are dates in the program's time zone.

The model replays the inputs in the order the test sent them (the test waits for each
batch's outputs before sending the next, so this is also the order each member's partition
applied them in) and records, per member, every ledger entry and every outcome the engine
reports (reward events, tiers, coupons, referrals) so that the test can compare them.

Codes are opaque strings chosen by the engine (coupon codes, referral codes): the test tells
the model which member each code it saw belongs to and, for a coupon, which issue it names
(owner, source, issue time: :meth:`Reference.learn_coupon_code`,
:meth:`Reference.learn_referral_code`); whether a code is valid, used, expired or whose it
is for a given sale is decided here.

Profiling (issue 5) is modelled from the program file's comments and the README ("Segments,
RFM and rolling stats"): per member the sales of the last 90 days (calendar days and hours in
the program's time zone; a refund takes its litres out of the refunded sale's day, from the
refund's ``fuel_type``; sales counts stay), the segments of ``[[segments]]`` evaluated after
every applied sale, refund, member event and referral outcome (as of the event's day, or of
the member's latest day on record for a late event) and at every daily job (as of the job's
day), the ordered ``entered``/``left`` changes with the event that caused them, and the
``[win_back]`` coupon and notification on entering its segment. Kafka orders nothing
across topics, so a referral outcome may reach the referrer's partition before or after the
referrer's own member events of the same day: the test tells the model the order the engine
processed each member's inputs in (:attr:`Reference.order`).

Refunds, the refund window, staleness and repeated ids follow the program file's
``[refunds]`` comments and the README ("Duplicates"): a refund reverses its sale only if
neither it nor the member's newest transaction is more than ``window_days`` x 24 h after the
sale; a transaction more than that older than the newest one is stale; a refund takes back
its running share, nothing once its sale's day lot has expired, never more than the balance,
from the sale's lot first; an id repeated with other content (contract fields, numbers by
value, ``occurred_at`` as instant and offset) is refused. Refused inputs are recorded with
their dead-letter reason (:attr:`MemberModel.rejected`).
"""

from __future__ import annotations

import calendar
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

DAY_S = 86_400

# Ledger reasons (the published contract).
FUEL = "fuel_points"
WELCOME = "welcome_bonus"
COUPON = "coupon_bonus"
MISSION = "mission_bonus"
REFERRAL = "referral_bonus"
BIRTHDAY = "birthday_bonus"
REVERSAL = "refund_reversal"
EXPIRY = "expiry"

# Coupon statuses.
REDEEMED = "redeemed"
UNKNOWN_COUPON = "unknown_coupon"
EXPIRED_COUPON = "expired_coupon"
COUPON_USED = "coupon_used"
NOT_OWNER = "not_owner"

# Coupon sources.
NEWSLETTER = "newsletter"
WIN_BACK = "win_back"

# Segment changes.
ENTERED = "entered"
LEFT = "left"

# Referral statuses.
ACCEPTED = "accepted"
SELF_REFERRAL = "self_referral"
UNKNOWN_REFERRAL_CODE = "unknown_referral_code"
REFERRER_ERASED = "referrer_erased"

_LOOK_ALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalize_code(code: str) -> str:
    """A code as typed, in canonical form (the contract: upper case, no ``-`` or spaces,
    ``O``, ``I``, ``L`` read as ``0``, ``1``, ``1``)."""
    return code.upper().replace("-", "").replace(" ", "").translate(_LOOK_ALIKES)


def centiliters(liters: float | int | str) -> int:
    """Litres as sent in JSON (at most 2 decimals in the scenario) to integer centilitres."""
    value = Fraction(str(liters)) * 100
    if value.denominator != 1:
        raise ValueError(f"{liters!r} litres has more than 2 decimals")
    return int(value)


def epoch_s(timestamp: str) -> int:
    """An ISO-8601 timestamp with an offset (``Z`` allowed) to epoch seconds."""
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"naive timestamp {timestamp!r}")
    return int(parsed.timestamp())


def offset_s(timestamp: str) -> int:
    """The UTC offset an ISO-8601 timestamp was written with, in seconds."""
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    offset = parsed.utcoffset()
    assert offset is not None, timestamp
    return int(offset.total_seconds())


TRANSACTION_DEFAULTS = {"type": "sale", "currency": "EUR", "coupon_codes": []}
TRANSACTION_FIELDS = (
    "transaction_id",
    "member_id",
    "station_id",
    "occurred_at",
    "type",
    "fuel_type",
    "liters",
    "amount",
    "currency",
    "original_transaction_id",
    "coupon_codes",
)
MEMBER_EVENT_FIELDS = (
    "event_id",
    "member_id",
    "type",
    "occurred_at",
    "birth_date",
    "locale",
    "referral_code",
    "consents",
    "email",
    "phone",
)


def content(value: dict[str, Any], names: tuple[str, ...], defaults: Mapping[str, Any]) -> Any:
    """What makes two inputs with the same id the same (README, "Duplicates"): the contract's
    fields (unknown extra ones ignored; null as absent, absent as its default), numbers by
    value, ``occurred_at`` as the instant and the UTC offset it was written with."""
    out: list[tuple[str, Any]] = []
    for name in names:
        field_value = value.get(name)
        if field_value is None:
            field_value = defaults.get(name)
        if name == "occurred_at":
            field_value = (epoch_s(field_value), offset_s(field_value))
        elif isinstance(field_value, int | float) and not isinstance(field_value, bool):
            field_value = Fraction(str(field_value))
        elif isinstance(field_value, list):
            field_value = tuple(field_value)
        elif isinstance(field_value, dict):
            field_value = tuple(sorted(field_value.items()))
        out.append((name, field_value))
    return tuple(out)


def _fraction(value: Any) -> Fraction:
    return Fraction(str(value))


# ---- the segment predicate language ----------------------------------------------------
# Published grammar: comparisons of a member's figures with constants (``==  !=  <  <=  >
# >=``, and ``in [...]`` for text), combined with ``and``, ``or``, ``not`` and parentheses;
# constants are numbers, quoted text, ``true``/``false``; a figure without a value makes
# every comparison on it false. Numbers are compared exactly (as fractions).

Figures = Mapping[str, Any]
Predicate = Callable[[Figures], bool]

MODELLED_FIGURES = (
    "days_since_last_sale",
    "sales_30d",
    "liters_30d",
    "morning_share_30d",
    "favourite_fuel",
)
"""The figures this model computes (those the default segments read)."""

_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?)|(?P<text>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>==|!=|<=|>=|<|>)|(?P<punct>[()\[\],])|(?P<word>[A-Za-z_]\w*))"
)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def parse_predicate(text: str) -> Predicate:
    """A predicate of the program file as a function of the model's figures."""
    tokens: list[tuple[str, str]] = []
    position, text = 0, text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or not match.group(match.lastgroup or ""):
            raise ValueError(f"cannot read predicate {text!r} at {text[position:]!r}")
        tokens.append((match.lastgroup or "", match.group(match.lastgroup or "")))
        position = match.end()
    at = [0]

    def peek() -> str | None:
        return tokens[at[0]][1] if at[0] < len(tokens) else None

    def take() -> tuple[str, str]:
        if at[0] >= len(tokens):
            raise ValueError(f"predicate {text!r} ends too early")
        at[0] += 1
        return tokens[at[0] - 1]

    def constant() -> Any:
        kind, value = take()
        if kind == "number":
            return Fraction(value)
        if kind == "text":
            return value[1:-1]
        if value in ("true", "false"):
            return value == "true"
        raise ValueError(f"predicate {text!r}: {value!r} is not a constant")

    def comparison() -> Predicate:
        kind, name = take()
        if kind != "word" or name not in MODELLED_FIGURES:
            raise ValueError(f"predicate {text!r}: the model does not compute {name!r}")
        if peek() == "in":
            take()
            if take()[1] != "[":
                raise ValueError(f"predicate {text!r}: '[' expected after 'in'")
            options = [constant()]
            while peek() == ",":
                take()
                options.append(constant())
            if take()[1] != "]":
                raise ValueError(f"predicate {text!r}: ']' expected")
            return lambda f: f[name] is not None and f[name] in options
        kind, symbol = take()
        if kind != "op":
            raise ValueError(f"predicate {text!r}: a comparison expected after {name!r}")
        compare, value = _COMPARE[symbol], constant()
        return lambda f: f[name] is not None and compare(f[name], value)

    def factor() -> Predicate:
        if peek() == "not":
            take()
            inner = factor()
            return lambda f: not inner(f)
        if peek() == "(":
            take()
            inner = expression()
            if take()[1] != ")":
                raise ValueError(f"predicate {text!r}: ')' expected")
            return inner
        return comparison()

    def conjunction() -> Predicate:
        parts = [factor()]
        while peek() == "and":
            take()
            parts.append(factor())
        return lambda f: all(part(f) for part in parts)

    def expression() -> Predicate:
        parts = [conjunction()]
        while peek() == "or":
            take()
            parts.append(conjunction())
        return lambda f: any(part(f) for part in parts)

    predicate = expression()
    if peek() is not None:
        raise ValueError(f"predicate {text!r}: unexpected {peek()!r}")
    return predicate


@dataclass(frozen=True)
class Segment:
    name: str
    when: str
    matches: Predicate


@dataclass(frozen=True)
class CouponOffer:
    benefit: str
    value: int
    valid_days: int


@dataclass(frozen=True)
class WinBack:
    segment: str
    offer: CouponOffer


@dataclass(frozen=True)
class Tier:
    name: str
    min_points: int
    multiplier: Fraction


@dataclass(frozen=True)
class Mission:
    id: str
    sales: int
    window_days: int
    min_centiliters: int
    bonus_points: int
    cooldown_days: int


@dataclass(frozen=True)
class Rules:
    """The numbers of a program file."""

    zone: ZoneInfo
    points_per_liter: Fraction
    volume_threshold_cl: int
    volume_multiplier: Fraction
    welcome_points: int
    referrer_points: int
    referee_points: int
    birthday_points: int
    expiry_days: int
    refund_window_days: int
    tier_window_days: int
    tiers: tuple[Tier, ...]
    missions: tuple[Mission, ...]
    coupon_benefit: str
    coupon_value: int
    coupon_valid_days: int
    segments: tuple[Segment, ...] = ()
    win_back: WinBack | None = None
    marketing_kinds: frozenset[str] = frozenset()

    @property
    def newsletter(self) -> CouponOffer:
        return CouponOffer(self.coupon_benefit, self.coupon_value, self.coupon_valid_days)

    @classmethod
    def load(cls, path: Path) -> Rules:
        raw = tomllib.loads(path.read_text())
        fuel = raw["fuel_points"]
        referral = raw.get("referral", {})
        newsletter = raw["coupons"]["newsletter"]
        tiers = tuple(
            sorted(
                (
                    Tier(level["name"], int(level["min_points"]), _fraction(level["multiplier"]))
                    for level in raw["tiers"]["levels"]
                ),
                key=lambda tier: tier.min_points,
            )
        )
        missions = tuple(
            Mission(
                id=m["id"],
                sales=int(m["sales"]),
                window_days=int(m["window_days"]),
                min_centiliters=centiliters(m.get("min_liters", 0)),
                bonus_points=int(m["bonus_points"]),
                cooldown_days=int(m["cooldown_days"]),
            )
            for m in raw.get("missions", [])
        )
        segments = tuple(
            Segment(entry["name"], entry["when"], parse_predicate(entry["when"]))
            for entry in raw.get("segments", [])
        )
        win_back = None
        if "win_back" in raw:
            section = raw["win_back"]
            offer = CouponOffer(
                section["coupon_benefit"],
                int(section["coupon_value"]),
                int(section["coupon_valid_days"]),
            )
            win_back = WinBack(section["segment"], offer)
        return cls(
            zone=ZoneInfo(raw["timezone"]),
            points_per_liter=_fraction(fuel["points_per_liter"]),
            volume_threshold_cl=centiliters(fuel["volume_threshold_liters"]),
            volume_multiplier=_fraction(fuel["volume_multiplier"]),
            welcome_points=int(raw["welcome_bonus"]["points"]),
            referrer_points=int(referral.get("referrer_points", 100)),
            referee_points=int(referral.get("referee_points", 50)),
            birthday_points=int(raw["birthday_bonus"]["points"]),
            expiry_days=int(raw["expiry"]["after_days"]),
            refund_window_days=int(raw["refunds"]["window_days"]),
            tier_window_days=int(raw["tiers"]["window_days"]),
            tiers=tiers,
            missions=missions,
            coupon_benefit=newsletter["benefit"],
            coupon_value=int(newsletter["value"]),
            coupon_valid_days=int(newsletter["valid_days"]),
            segments=segments,
            win_back=win_back,
            marketing_kinds=frozenset(raw.get("notifications", {}).get("marketing_kinds", [])),
        )

    def day(self, instant_s: int) -> date:
        """Calendar day of an instant in the program's time zone."""
        return datetime.fromtimestamp(instant_s, self.zone).date()

    def hour(self, instant_s: int) -> int:
        """Hour of the day of an instant in the program's time zone."""
        return datetime.fromtimestamp(instant_s, self.zone).hour

    def start_of_day(self, day: date) -> int:
        """Epoch seconds of the first instant of ``day`` in the program's time zone."""
        return int(datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp())

    def tier_index(self, name: str | None) -> int:
        for index, tier in enumerate(self.tiers):
            if tier.name == name:
                return index
        return 0

    def tier_reached(self, earned: int) -> int:
        reached = 0
        for index, tier in enumerate(self.tiers):
            if earned >= tier.min_points:
                reached = index
        return reached


def is_birthday(birth: date, day: date) -> bool:
    if (birth.month, birth.day) == (2, 29) and not calendar.isleap(day.year):
        return (day.month, day.day) == (2, 28)
    return (birth.month, birth.day) == (day.month, day.day)


@dataclass
class Entry:
    """One ledger entry as the model expects it."""

    source: str
    """What caused it: a transaction id, a member event id, ``daily:<date>``, or
    ``referral:<role>:<signup event id>``."""
    reason: str
    delta: int
    balance_after: int


@dataclass
class SaleRecord:
    transaction_id: str
    at_s: int
    day: date
    liters_cl: int
    credited: int
    refunded_cl: int = 0
    hour: int = 0
    """Hour of the sale in the program's time zone (dayparts)."""
    fuel: str = ""


@dataclass
class CouponRecord:
    owner: str
    source: str
    """``newsletter`` or ``win_back``."""
    source_event_id: str
    """The event that issued it (a member event id, ``daily:<date>``, ``referral:...``)."""
    issued_s: int
    expires_s: int
    benefit: str
    value: int
    code: str | None = None
    used_by: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.owner, self.source, self.issued_s)


@dataclass(frozen=True)
class SegmentChange:
    segment: str
    change: str
    source_event_id: str
    """As the engine reports it: the signup's event id for a referral outcome."""
    at_s: int
    """Event time of the change (the start of the day for a daily job)."""
    cause: str
    """What the model applied: the source with the referral role, for diffs."""


@dataclass
class Outcome:
    """What one input did to one member (the fields its reward event reports)."""

    kind: str
    points: int = 0
    enrolled: bool = False
    tier: str | None = None
    tier_change: tuple[str, str] | None = None
    coupons: list[tuple[str, str]] | None = None
    missions: list[str] | None = None
    coupon_issued: CouponRecord | None = None
    """The coupon this event issued (newsletter or win-back), if any."""
    refunded_cl: int | None = None
    referral: tuple[str, str, str] | None = None
    """(code, status, role) for a referral outcome."""
    segment_changes: int = 0


@dataclass
class MemberModel:
    member_id: str
    enrolled: bool = False
    welcome_given: bool = False
    balance: int = 0
    tier: int = 0
    earned: dict[date, int] = field(default_factory=dict)
    lots: dict[date, int] = field(default_factory=dict)
    sales: dict[str, SaleRecord] = field(default_factory=dict)
    applied_transactions: set[str] = field(default_factory=set)
    applied_events: set[str] = field(default_factory=set)
    birth_date: date | None = None
    marketing_consent: bool | None = None
    newsletter_issued: bool = False
    coupons: list[CouponRecord] = field(default_factory=list)
    mission_awards: dict[str, int] = field(default_factory=dict)
    birthday_years: set[int] = field(default_factory=set)
    last_daily: date | None = None
    last_sale_s: int | None = None
    segments: tuple[str, ...] = ()
    segment_changes: list[SegmentChange] = field(default_factory=list)
    refunded_cl: dict[tuple[date, str], int] = field(default_factory=dict)
    """Centilitres refunded by (refunded sale's day, refund's fuel)."""
    win_back_notices: list[CouponRecord] = field(default_factory=list)
    """Win-back coupons whose ``win_back`` notification was sent (marketing consent)."""
    referred: bool = False
    erased: bool = False
    refused: list[str] = field(default_factory=list)
    """Inputs sent after the member's erase: refused (dead-lettered ``member_erased``)."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(input id, dead-letter reason) of the inputs the account refused: a refund out of its
    window, a stale transaction, a repeated id with other content."""
    contents: dict[str, Any] = field(default_factory=dict)
    """The content of each applied transaction and member event, by id."""
    transaction_at: dict[str, int] = field(default_factory=dict)
    """Event time of each applied transaction (sale or refund), by id."""
    ledger: list[Entry] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """By source: transaction id, member event id, ``daily:<date>``, ``referral:<role>:<id>``."""
    events: list[str] = field(default_factory=list)
    """Human-readable log of what the model applied, for diffs."""

    def ledger_multiset(self) -> Counter[tuple[str, int]]:
        return Counter((entry.reason, entry.delta) for entry in self.ledger)


@dataclass
class PendingSide:
    """One side of a referral, applied when the member's partition would apply it."""

    member_id: str
    source: str
    role: str
    code: str
    status: str
    points: int
    signup_event_id: str
    signup_at: str
    at_s: int


class Reference:
    """The program applied to a stream of inputs, member by member."""

    def __init__(self, rules: Rules, referrals: bool = True) -> None:
        self.rules = rules
        self.referrals = referrals
        """False models the program without the referral mechanic (diagnostics only)."""
        self.members: dict[str, MemberModel] = {}
        self.coupon_codes: dict[str, tuple[str, str, int]] = {}
        """Code -> (owner, source, issue time) of the coupon it names."""
        self.coupon_by_issue: dict[tuple[str, str, int], str] = {}
        self.code_conflicts: list[str] = []
        self.referral_owner: dict[str, str] = {}
        self.order: dict[str, dict[str, int]] = {}
        """Member -> source -> position in the order the engine processed the member's
        inputs (from the member's reward events); decides where a referral outcome falls
        among the member's own member events of the day."""
        self.pending: dict[str, list[PendingSide]] = {}

    # ---- codes seen in the engine's outputs -------------------------------------------

    def learn_coupon_code(self, code: str, owner: str, source: str, issued_s: int) -> None:
        """``code`` names the coupon of ``owner`` issued by ``source`` at ``issued_s``."""
        code = normalize_code(code)
        key = (owner, source, issued_s)
        known = self.coupon_codes.setdefault(code, key)
        if known != key:
            self.code_conflicts.append(f"code {code} names both {known} and {key}")
        other = self.coupon_by_issue.setdefault(key, code)
        if other != code:
            self.code_conflicts.append(f"coupon {key} seen with codes {other} and {code}")

    def learn_referral_code(self, code: str, owner: str) -> None:
        self.referral_owner[normalize_code(code)] = owner

    # ---- helpers ------------------------------------------------------------------------

    def member(self, member_id: str) -> MemberModel:
        if member_id not in self.members:
            self.members[member_id] = MemberModel(member_id)
        return self.members[member_id]

    def earned_in_window(self, member: MemberModel, day: date) -> int:
        """Points earned in the tier window ending with ``day``, that day included."""
        first = day - timedelta(days=self.rules.tier_window_days - 1)
        return sum(points for d, points in member.earned.items() if first <= d <= day)

    def tier_as_of(self, member: MemberModel, day: date) -> date:
        """README, ``[tiers]``: the as-of day of an event of ``day`` is the latest of that
        day, the member's latest day with a credit and the day of their last daily job."""
        return max(day, max(member.earned, default=day), member.last_daily or day)

    def _post(self, member: MemberModel, source: str, reason: str, delta: int) -> None:
        member.balance += delta
        member.ledger.append(Entry(source, reason, delta, member.balance))

    def _earn(self, member: MemberModel, day: date, points: int) -> None:
        """A credit counted for tiers and put into the day's expiry lot (nothing is credited
        by an event that earns no points: its day is no day with a credit)."""
        if points > 0:
            member.earned[day] = member.earned.get(day, 0) + points
            member.lots[day] = member.lots.get(day, 0) + points

    def _debit_lots(self, member: MemberModel, points: int) -> None:
        for day in sorted(member.lots):
            if points <= 0:
                break
            taken = min(points, member.lots[day])
            member.lots[day] -= taken
            points -= taken
            if member.lots[day] == 0:
                del member.lots[day]

    def _upgrade(self, member: MemberModel, day: date) -> tuple[str, str] | None:
        """The upgrade a credit of ``day`` makes, judged as of the latest day on record (a
        late credit is not judged as of its own day)."""
        reached = self.rules.tier_reached(
            self.earned_in_window(member, self.tier_as_of(member, day))
        )
        if reached > member.tier:
            change = (self.rules.tiers[member.tier].name, self.rules.tiers[reached].name)
            member.tier = reached
            return change
        return None

    def _issue(
        self, member: MemberModel, source: str, event_id: str, offer: CouponOffer, at_s: int
    ) -> CouponRecord:
        coupon = CouponRecord(
            owner=member.member_id,
            source=source,
            source_event_id=event_id,
            issued_s=at_s,
            expires_s=at_s + offer.valid_days * DAY_S,
            benefit=offer.benefit,
            value=offer.value,
        )
        coupon.code = self.coupon_by_issue.get(coupon.key)
        member.coupons.append(coupon)
        return coupon

    # ---- profiling ----------------------------------------------------------------------

    def figures(self, member: MemberModel, day: date) -> dict[str, Any]:
        """The member's figures for the trailing windows ending on ``day`` (that day and
        the days before it: 30 days are ``day - 29`` to ``day``)."""

        def within(sale: SaleRecord, days: int) -> bool:
            return 0 <= (day - sale.day).days < days

        last_30 = [sale for sale in member.sales.values() if within(sale, 30)]
        morning = sum(1 for sale in last_30 if 6 <= sale.hour < 11)
        bought: dict[tuple[date, str], int] = {}  # (day, fuel) -> centilitres sold
        for sale in member.sales.values():
            if within(sale, 90):
                bought[(sale.day, sale.fuel)] = (
                    bought.get((sale.day, sale.fuel), 0) + sale.liters_cl
                )
        fuels: dict[str, list[Any]] = {}  # fuel -> [net centilitres, latest day bought]
        for (sold_on, fuel), cl in bought.items():
            entry = fuels.setdefault(fuel, [0, sold_on])
            entry[0] += max(0, cl - member.refunded_cl.get((sold_on, fuel), 0))
            entry[1] = max(entry[1], sold_on)
        # Most litres among the fuels bought in the 90 days (a refunded sale stays a sale,
        # so a fuel whose litres were all refunded is still one, at 0 litres); a tie goes to
        # the fuel bought on the latest day, then to the name that sorts last.
        favourite = max(
            ((cl, last, fuel) for fuel, (cl, last) in fuels.items()), default=(0, day, None)
        )[2]
        last_s = member.last_sale_s
        return {
            "days_since_last_sale": None if last_s is None else (day - self.rules.day(last_s)).days,
            "sales_30d": len(last_30),
            "liters_30d": Fraction(sum(sale.liters_cl - sale.refunded_cl for sale in last_30), 100),
            "morning_share_30d": Fraction(morning, len(last_30)) if last_30 else Fraction(0),
            "favourite_fuel": favourite,
        }

    def _resegment(
        self,
        member: MemberModel,
        day: date,
        at_s: int,
        source_event_id: str,
        cause: str,
        outcome: Outcome,
    ) -> None:
        """Re-evaluate the member's segments as of ``day``; entering the win-back segment
        issues its coupon (and its notification, with marketing consent)."""
        rules = self.rules
        if not rules.segments:
            return
        # A late event (dated before the member's newest sale or last daily job) is
        # evaluated as of that latest day: windows never move back in time.
        newest_sale = max((sale.day for sale in member.sales.values()), default=day)
        day = max(day, newest_sale, member.last_daily or day)
        figures = self.figures(member, day)
        now = tuple(sorted(s.name for s in rules.segments if s.matches(figures)))
        if now == member.segments:
            return
        changes = [(name, LEFT) for name in member.segments if name not in now] + [
            (name, ENTERED) for name in now if name not in member.segments
        ]
        member.segments = now
        for name, change in changes:
            member.segment_changes.append(SegmentChange(name, change, source_event_id, at_s, cause))
        outcome.segment_changes += len(changes)
        note = " ".join(("+" if change == ENTERED else "-") + name for name, change in changes)
        win_back = rules.win_back
        if win_back is not None and (win_back.segment, ENTERED) in changes:
            coupon = self._issue(member, WIN_BACK, cause, win_back.offer, at_s)
            # One coupon_issued per reward event: a newsletter subscription's own coupon
            # keeps it (the win-back coupon still shows in the wallet and its notification).
            outcome.coupon_issued = outcome.coupon_issued or coupon
            note += f" win-back coupon {coupon.code}"
            if WIN_BACK not in rules.marketing_kinds or member.marketing_consent:
                member.win_back_notices.append(coupon)
                note += " (notified)"
        member.events.append(f"    segments as of {day}: {note}")

    # ---- transactions -------------------------------------------------------------------

    def transaction(self, value: dict[str, Any]) -> None:
        self.settle()
        member = self.member(value["member_id"])
        transaction_id = value["transaction_id"]
        if member.erased:
            member.refused.append(transaction_id)
            return
        at_s = epoch_s(value["occurred_at"])
        window_s = self.rules.refund_window_days * DAY_S
        newest_s = max(member.transaction_at.values(), default=0)
        # Transactions are remembered while within the window of the newest one.
        remembered = {t for t, t_s in member.transaction_at.items() if t_s >= newest_s - window_s}
        this = content(value, TRANSACTION_FIELDS, TRANSACTION_DEFAULTS)
        if transaction_id in remembered:
            if member.contents[transaction_id] != this:
                self._reject(member, transaction_id, "transaction_id_conflict")
                return
            member.events.append(f"  duplicate {transaction_id}")
            return
        if at_s < newest_s - window_s:
            self._reject(member, transaction_id, "stale_transaction")
            return
        if value.get("type", "sale") == "refund":
            sale = member.sales.get(value["original_transaction_id"])
            # The window runs from the sale to the later of the refund and the newest
            # transaction (a sale the newest transaction left out is forgotten).
            if sale is None or max(at_s, newest_s) - sale.at_s > window_s:
                self._reject(member, transaction_id, "unknown_original_transaction")
                return
        member.applied_transactions.add(transaction_id)
        member.contents[transaction_id] = this
        member.transaction_at[transaction_id] = at_s
        if value.get("type", "sale") == "refund":
            outcome = self._refund(member, value)
        else:
            outcome = self._sale(member, value)
        self._resegment(member, self.rules.day(at_s), at_s, transaction_id, transaction_id, outcome)

    def _reject(self, member: MemberModel, ident: str, reason: str) -> None:
        member.rejected.append((ident, reason))
        member.events.append(f"  rejected {ident}: {reason}")

    def _sale(self, member: MemberModel, value: dict[str, Any]) -> Outcome:
        rules = self.rules
        transaction_id = value["transaction_id"]
        at_s = epoch_s(value["occurred_at"])
        day = rules.day(at_s)
        liters_cl = centiliters(value["liters"])
        outcome = Outcome(kind="sale", tier=rules.tiers[member.tier].name)
        entries: list[tuple[str, int]] = []

        factor = rules.points_per_liter * rules.tiers[member.tier].multiplier
        if liters_cl > rules.volume_threshold_cl:
            factor *= rules.volume_multiplier
        fuel = (liters_cl * factor.numerator) // (100 * factor.denominator)
        if fuel > 0:
            entries.append((FUEL, fuel))
        if not member.enrolled:
            member.enrolled = True
            outcome.enrolled = True
        if not member.welcome_given and rules.welcome_points:
            member.welcome_given = True
            entries.append((WELCOME, rules.welcome_points))

        presented = value.get("coupon_codes") or []
        if presented:
            outcome.coupons = []
            for typed in presented:
                code = normalize_code(typed)
                status, coupon = self._coupon_status(member, code, at_s)
                if coupon is not None:
                    coupon.used_by = transaction_id
                    if coupon.benefit == "bonus_points":
                        entries.append((COUPON, coupon.value))
                outcome.coupons.append((code, status))

        # This sale is recorded before counting, so it counts itself.
        member.sales[transaction_id] = SaleRecord(
            transaction_id,
            at_s,
            day,
            liters_cl,
            0,
            hour=rules.hour(at_s),
            fuel=value["fuel_type"],
        )
        member.last_sale_s = max(member.last_sale_s or at_s, at_s)
        # README, `[[missions]]`: this sale and at least `sales` - 1 other sales, each of at
        # least `min_liters` litres net of the refunds applied so far (one refunded in full
        # never counts), in the `window_days` x 24 h ending at this sale (exact time; a sale
        # dated after it does not count), at least `cooldown_days` x 24 h after the sale
        # that last completed the mission; sales more than `[refunds] window_days` x 24 h
        # older than the member's latest transaction are forgotten.
        earlier = [t_s for t, t_s in member.transaction_at.items() if t != transaction_id]
        remembered_from = max(earlier, default=0) - rules.refund_window_days * DAY_S
        this_sale = member.sales[transaction_id]
        for mission in rules.missions:

            def counts(sale: SaleRecord, mission: Mission = mission) -> bool:
                net = sale.liters_cl - sale.refunded_cl
                return net > 0 and net >= mission.min_centiliters

            last = member.mission_awards.get(mission.id)
            if last is not None and at_s - last < mission.cooldown_days * DAY_S:
                continue
            if not counts(this_sale):
                continue
            start = at_s - mission.window_days * DAY_S
            count = sum(
                1
                for sale in member.sales.values()
                if start < sale.at_s <= at_s
                and (sale is this_sale or sale.at_s >= remembered_from)
                and counts(sale)
            )
            if count >= mission.sales:
                member.mission_awards[mission.id] = at_s
                outcome.missions = [*(outcome.missions or []), mission.id]
                if mission.bonus_points:
                    entries.append((MISSION, mission.bonus_points))

        credited = sum(delta for _, delta in entries)
        member.sales[transaction_id].credited = credited
        for reason, delta in entries:
            self._post(member, transaction_id, reason, delta)
        self._earn(member, day, credited)
        outcome.tier_change = self._upgrade(member, day)
        outcome.points = credited
        member.outcomes[transaction_id] = outcome
        member.events.append(
            f"  {value['occurred_at']} sale {transaction_id} {value['liters']} L "
            f"{value['fuel_type']} coupons={presented or '-'} -> {entries} tier {outcome.tier}"
            f"{' -> ' + outcome.tier_change[1] if outcome.tier_change else ''}"
            f" balance {member.balance}"
        )
        return outcome

    def _coupon_status(
        self, member: MemberModel, code: str, at_s: int
    ) -> tuple[str, CouponRecord | None]:
        """The status of a presented code, and the coupon it redeems."""
        known = self.coupon_codes.get(code)
        if known is None:
            return UNKNOWN_COUPON, None
        if known[0] != member.member_id:
            return NOT_OWNER, None
        coupon = next((c for c in member.coupons if c.code == code), None)
        if coupon is None:
            return UNKNOWN_COUPON, None
        if coupon.used_by is not None:
            return COUPON_USED, None
        if at_s >= coupon.expires_s:
            return EXPIRED_COUPON, None
        return REDEEMED, coupon

    def _refund(self, member: MemberModel, value: dict[str, Any]) -> Outcome:
        transaction_id = value["transaction_id"]
        original_id = value["original_transaction_id"]
        sale = member.sales[original_id]
        requested = centiliters(value["liters"])
        refunded = max(0, min(requested, sale.liters_cl - sale.refunded_cl))
        before = sale.credited * sale.refunded_cl // sale.liters_cl
        after = sale.credited * (sale.refunded_cl + refunded) // sale.liters_cl
        # The share, but nothing once the points of the sale's day expired, and never more
        # than the balance (no redemptions here: nothing held).
        expired = member.last_daily is not None and sale.day <= member.last_daily - timedelta(
            days=self.rules.expiry_days
        )
        points = 0 if expired else max(0, min(after - before, member.balance))
        sale.refunded_cl += refunded
        key = (sale.day, value["fuel_type"])
        member.refunded_cl[key] = member.refunded_cl.get(key, 0) + refunded
        if points:
            self._post(member, transaction_id, REVERSAL, -points)
            # From the sale's day lot first, then the oldest lots.
            own = min(points, member.lots.get(sale.day, 0))
            if own:
                member.lots[sale.day] -= own
                if member.lots[sale.day] == 0:
                    del member.lots[sale.day]
            self._debit_lots(member, points - own)
            member.earned[sale.day] = member.earned.get(sale.day, 0) - points
        outcome = Outcome(kind="refund", points=-points, refunded_cl=refunded)
        member.outcomes[transaction_id] = outcome
        member.events.append(
            f"  {value['occurred_at']} refund {transaction_id} of {original_id} "
            f"{value['liters']} L (refunded {refunded / 100}) -> -{points} "
            f"balance {member.balance}"
        )
        return outcome

    # ---- member events ------------------------------------------------------------------

    def member_event(self, value: dict[str, Any]) -> None:
        member = self.member(value["member_id"])
        event_id = value["event_id"]
        kind = value["type"]
        self._catch_up(member, event_id)
        if member.erased:
            member.refused.append(event_id)
            return
        this = content(value, MEMBER_EVENT_FIELDS, {})
        if event_id in member.applied_events:
            if member.contents[event_id] != this:
                self._reject(member, event_id, "event_id_conflict")
                return
            member.events.append(f"  duplicate {event_id}")
            return
        member.applied_events.add(event_id)
        member.contents[event_id] = this
        at_s = epoch_s(value["occurred_at"])
        outcome = Outcome(kind=kind)
        note = ""
        if kind in ("signup", "profile_updated", "consents_changed"):
            if value.get("birth_date"):
                member.birth_date = date.fromisoformat(value["birth_date"])
            marketing = (value.get("consents") or {}).get("marketing")
            if marketing is not None:
                member.marketing_consent = bool(marketing)
        if kind == "signup" and not member.enrolled:
            member.enrolled = True
            outcome.enrolled = True
        if kind == "newsletter_subscribed" and not member.newsletter_issued:
            member.newsletter_issued = True
            coupon = self._issue(member, NEWSLETTER, event_id, self.rules.newsletter, at_s)
            outcome.coupon_issued = coupon
            note = f" coupon {coupon.code}"
        if kind == "erase":
            member.erased = True
        member.outcomes[event_id] = outcome
        member.events.append(
            f"  {value['occurred_at']} {kind} {event_id}{note}"
            f"{' referral ' + value['referral_code'] if value.get('referral_code') else ''}"
        )
        if kind != "erase":
            self._resegment(member, self.rules.day(at_s), at_s, event_id, event_id, outcome)
        if kind == "signup" and value.get("referral_code") and not member.referred:
            member.referred = True
            if self.referrals:
                self._referral(member, value, at_s)

    def _referral(self, member: MemberModel, signup: dict[str, Any], at_s: int) -> None:
        """Settle a referral claim; each side is applied on its member's own turn."""
        code = normalize_code(signup["referral_code"])
        owner_id = self.referral_owner.get(code)
        owner = self.members.get(owner_id) if owner_id else None
        if owner is None:
            status = UNKNOWN_REFERRAL_CODE
        elif owner.erased:
            status = REFERRER_ERASED
        elif owner is member:
            status = SELF_REFERRAL
        else:
            status = ACCEPTED
        sides = [(member, "referee", self.rules.referee_points)]
        if status == ACCEPTED and owner is not None:
            sides.append((owner, "referrer", self.rules.referrer_points))
        for side, role, points in sides:
            self.pending.setdefault(side.member_id, []).append(
                PendingSide(
                    member_id=side.member_id,
                    source=f"referral:{role}:{signup['event_id']}",
                    role=role,
                    code=code,
                    status=status,
                    points=points,
                    signup_event_id=signup["event_id"],
                    signup_at=signup["occurred_at"],
                    at_s=at_s,
                )
            )

    def _position(self, member_id: str, source: str) -> float:
        return self.order.get(member_id, {}).get(source, float("inf"))

    def _catch_up(self, member: MemberModel, event_id: str) -> None:
        """Apply the member's pending referral outcomes the engine processed before
        ``event_id``."""
        pending = self.pending.get(member.member_id)
        if not pending:
            return
        before = self._position(member.member_id, event_id)
        ready = [side for side in pending if self._position(side.member_id, side.source) < before]
        for side in sorted(ready, key=lambda s: self._position(s.member_id, s.source)):
            pending.remove(side)
            self._apply_side(side)

    def settle(self) -> None:
        """Apply every pending referral outcome (the test waits for them before sending
        the day's transactions), in the order the engine processed them."""
        for member_id, pending in list(self.pending.items()):
            order = sorted(
                enumerate(pending),
                key=lambda item: (self._position(member_id, item[1].source), item[0]),
            )
            for _, side in order:
                self._apply_side(side)
        self.pending.clear()

    def _apply_side(self, side: PendingSide) -> None:
        member = self.members[side.member_id]
        day = self.rules.day(side.at_s)
        outcome = Outcome(kind="referral", referral=(side.code, side.status, side.role))
        if side.status == ACCEPTED and side.points:
            self._post(member, side.source, REFERRAL, side.points)
            self._earn(member, day, side.points)
            outcome.points = side.points
            outcome.tier_change = self._upgrade(member, day)
        member.outcomes[side.source] = outcome
        member.events.append(
            f"  {side.signup_at} referral {side.role} code {side.code} {side.status} "
            f"+{outcome.points} balance {member.balance}"
        )
        self._resegment(member, day, side.at_s, side.signup_event_id, side.source, outcome)

    # ---- daily job ----------------------------------------------------------------------

    def daily(self, day: date) -> None:
        """The daily job of ``day`` for every enrolled member (idempotent per date)."""
        self.settle()
        rules = self.rules
        for member in self.members.values():
            if not member.enrolled or member.erased:
                continue
            if member.last_daily is not None and member.last_daily >= day:
                continue
            member.last_daily = day
            source = f"daily:{day.isoformat()}"
            outcome = Outcome(kind="daily")
            birth = member.birth_date
            if (
                birth is not None
                and rules.birthday_points
                and day.year not in member.birthday_years
                and is_birthday(birth, day)
            ):
                member.birthday_years.add(day.year)
                self._post(member, source, BIRTHDAY, rules.birthday_points)
                self._earn(member, day, rules.birthday_points)
                outcome.points += rules.birthday_points
                outcome.tier_change = self._upgrade(member, day)
            last_expired = day - timedelta(days=rules.expiry_days)
            expired = sum(points for d, points in member.lots.items() if d <= last_expired)
            if expired:
                member.lots = {d: p for d, p in member.lots.items() if d > last_expired}
                self._post(member, source, EXPIRY, -expired)
                outcome.points -= expired
            held = rules.tier_reached(self.earned_in_window(member, self.tier_as_of(member, day)))
            if held < member.tier:
                outcome.tier_change = (rules.tiers[member.tier].name, rules.tiers[held].name)
                member.tier = held
            logged = len(member.events)
            self._resegment(member, day, rules.start_of_day(day), source, source, outcome)
            if outcome.points or outcome.tier_change or outcome.segment_changes:
                member.outcomes[source] = outcome
                member.events.insert(
                    logged,
                    f"  daily {day} {outcome.points:+d}"
                    f"{' tier ' + '->'.join(outcome.tier_change) if outcome.tier_change else ''}"
                    f" balance {member.balance}",
                )

    # ---- results ------------------------------------------------------------------------

    def tier_name(self, member_id: str) -> str:
        return self.rules.tiers[self.members[member_id].tier].name
