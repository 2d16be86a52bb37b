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
the model which member each code it saw belongs to (:meth:`Reference.learn_coupon_code`,
:meth:`Reference.learn_referral_code`); whether a code is valid, used, expired or whose it
is for a given sale is decided here.
"""

from __future__ import annotations

import calendar
import tomllib
from collections import Counter
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


def _fraction(value: Any) -> Fraction:
    return Fraction(str(value))


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
        )

    def day(self, instant_s: int) -> date:
        """Calendar day of an instant in the program's time zone."""
        return datetime.fromtimestamp(instant_s, self.zone).date()

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


@dataclass
class CouponRecord:
    owner: str
    issued_s: int
    expires_s: int
    source_event_id: str
    code: str | None = None
    used_by: str | None = None


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
    coupon_issued: bool = False
    refunded_cl: int | None = None
    referral: tuple[str, str, str] | None = None
    """(code, status, role) for a referral outcome."""


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
    newsletter_coupon: CouponRecord | None = None
    mission_awards: dict[str, int] = field(default_factory=dict)
    birthday_years: set[int] = field(default_factory=set)
    last_daily: date | None = None
    referred: bool = False
    erased: bool = False
    refused: list[str] = field(default_factory=list)
    """Inputs sent after the member's erase: refused (dead-lettered ``member_erased``)."""
    ledger: list[Entry] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """By source: transaction id, member event id, ``daily:<date>``, ``referral:<role>:<id>``."""
    events: list[str] = field(default_factory=list)
    """Human-readable log of what the model applied, for diffs."""

    def ledger_multiset(self) -> Counter[tuple[str, int]]:
        return Counter((entry.reason, entry.delta) for entry in self.ledger)


class Reference:
    """The program applied to a stream of inputs, member by member."""

    def __init__(self, rules: Rules, referrals: bool = True) -> None:
        self.rules = rules
        self.referrals = referrals
        """False models the program without the referral mechanic (diagnostics only)."""
        self.members: dict[str, MemberModel] = {}
        self.coupon_owner: dict[str, str] = {}
        self.referral_owner: dict[str, str] = {}

    # ---- codes seen in the engine's outputs -------------------------------------------

    def learn_coupon_code(self, code: str, owner: str) -> None:
        self.coupon_owner[normalize_code(code)] = owner

    def learn_referral_code(self, code: str, owner: str) -> None:
        self.referral_owner[normalize_code(code)] = owner

    # ---- helpers ------------------------------------------------------------------------

    def member(self, member_id: str) -> MemberModel:
        if member_id not in self.members:
            self.members[member_id] = MemberModel(member_id)
        return self.members[member_id]

    def earned_in_window(self, member: MemberModel, day: date) -> int:
        first = day - timedelta(days=self.rules.tier_window_days - 1)
        return sum(points for d, points in member.earned.items() if first <= d <= day)

    def _post(self, member: MemberModel, source: str, reason: str, delta: int) -> None:
        member.balance += delta
        member.ledger.append(Entry(source, reason, delta, member.balance))

    def _earn(self, member: MemberModel, day: date, points: int) -> None:
        """A credit counted for tiers and put into the day's expiry lot."""
        member.earned[day] = member.earned.get(day, 0) + points
        if points > 0:
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
        reached = self.rules.tier_reached(self.earned_in_window(member, day))
        if reached > member.tier:
            change = (self.rules.tiers[member.tier].name, self.rules.tiers[reached].name)
            member.tier = reached
            return change
        return None

    # ---- transactions -------------------------------------------------------------------

    def transaction(self, value: dict[str, Any]) -> None:
        member = self.member(value["member_id"])
        transaction_id = value["transaction_id"]
        if member.erased:
            member.refused.append(transaction_id)
            return
        if transaction_id in member.applied_transactions:
            member.events.append(f"  duplicate {transaction_id}")
            return
        member.applied_transactions.add(transaction_id)
        if value.get("type", "sale") == "refund":
            self._refund(member, value)
        else:
            self._sale(member, value)

    def _sale(self, member: MemberModel, value: dict[str, Any]) -> None:
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
                status = self._coupon_status(member, code, at_s)
                if status == REDEEMED:
                    coupon = member.newsletter_coupon
                    assert coupon is not None
                    coupon.used_by = transaction_id
                    if rules.coupon_benefit == "bonus_points":
                        entries.append((COUPON, rules.coupon_value))
                outcome.coupons.append((code, status))

        # This sale is recorded before counting, so it counts itself.
        member.sales[transaction_id] = SaleRecord(transaction_id, at_s, day, liters_cl, 0)
        for mission in rules.missions:
            last = member.mission_awards.get(mission.id)
            if last is not None and at_s - last < mission.cooldown_days * DAY_S:
                continue
            start = at_s - mission.window_days * DAY_S
            count = sum(
                1
                for sale in member.sales.values()
                if start < sale.at_s <= at_s and sale.liters_cl >= mission.min_centiliters
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
            f"coupons={presented or '-'} -> {entries} tier {outcome.tier}"
            f"{' -> ' + outcome.tier_change[1] if outcome.tier_change else ''}"
            f" balance {member.balance}"
        )

    def _coupon_status(self, member: MemberModel, code: str, at_s: int) -> str:
        owner = self.coupon_owner.get(code)
        if owner is None:
            return UNKNOWN_COUPON
        if owner != member.member_id:
            return NOT_OWNER
        coupon = member.newsletter_coupon
        if coupon is None or coupon.code != code:
            return UNKNOWN_COUPON
        if coupon.used_by is not None:
            return COUPON_USED
        if at_s >= coupon.expires_s:
            return EXPIRED_COUPON
        return REDEEMED

    def _refund(self, member: MemberModel, value: dict[str, Any]) -> None:
        transaction_id = value["transaction_id"]
        original_id = value["original_transaction_id"]
        sale = member.sales.get(original_id)
        if sale is None:
            raise AssertionError(f"the scenario refunds an unknown sale {original_id}")
        requested = centiliters(value["liters"])
        refunded = max(0, min(requested, sale.liters_cl - sale.refunded_cl))
        before = sale.credited * sale.refunded_cl // sale.liters_cl
        after = sale.credited * (sale.refunded_cl + refunded) // sale.liters_cl
        points = after - before
        sale.refunded_cl += refunded
        if points:
            self._post(member, transaction_id, REVERSAL, -points)
            self._debit_lots(member, points)
            member.earned[sale.day] = member.earned.get(sale.day, 0) - points
        member.outcomes[transaction_id] = Outcome(
            kind="refund", points=-points, refunded_cl=refunded
        )
        member.events.append(
            f"  {value['occurred_at']} refund {transaction_id} of {original_id} "
            f"{value['liters']} L (refunded {refunded / 100}) -> -{points} "
            f"balance {member.balance}"
        )

    # ---- member events ------------------------------------------------------------------

    def member_event(self, value: dict[str, Any]) -> None:
        member = self.member(value["member_id"])
        event_id = value["event_id"]
        kind = value["type"]
        if member.erased:
            member.refused.append(event_id)
            return
        if event_id in member.applied_events:
            member.events.append(f"  duplicate {event_id}")
            return
        member.applied_events.add(event_id)
        at_s = epoch_s(value["occurred_at"])
        outcome = Outcome(kind=kind)
        note = ""
        if kind in ("signup", "profile_updated", "consents_changed") and value.get("birth_date"):
            member.birth_date = date.fromisoformat(value["birth_date"])
        if kind == "signup" and not member.enrolled:
            member.enrolled = True
            outcome.enrolled = True
        if kind == "newsletter_subscribed" and member.newsletter_coupon is None:
            valid_s = self.rules.coupon_valid_days * DAY_S
            coupon = CouponRecord(member.member_id, at_s, at_s + valid_s, event_id)
            coupon.code = next(
                (code for code, owner in self.coupon_owner.items() if owner == member.member_id),
                None,
            )
            member.newsletter_coupon = coupon
            outcome.coupon_issued = True
            note = f" coupon {coupon.code}"
        if kind == "erase":
            member.erased = True
        member.outcomes[event_id] = outcome
        member.events.append(
            f"  {value['occurred_at']} {kind} {event_id}{note}"
            f"{' referral ' + value['referral_code'] if value.get('referral_code') else ''}"
        )
        if kind == "signup" and value.get("referral_code") and not member.referred:
            member.referred = True
            if self.referrals:
                self._referral(member, value, at_s)

    def _referral(self, member: MemberModel, signup: dict[str, Any], at_s: int) -> None:
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
        day = self.rules.day(at_s)
        sides = [(member, "referee", self.rules.referee_points)]
        if status == ACCEPTED and owner is not None:
            sides.append((owner, "referrer", self.rules.referrer_points))
        for side, role, points in sides:
            source = f"referral:{role}:{signup['event_id']}"
            outcome = Outcome(kind="referral", referral=(code, status, role))
            if status == ACCEPTED and points:
                self._post(side, source, REFERRAL, points)
                self._earn(side, day, points)
                outcome.points = points
                outcome.tier_change = self._upgrade(side, day)
            side.outcomes[source] = outcome
            side.events.append(
                f"  {signup['occurred_at']} referral {role} code {code} {status} "
                f"+{outcome.points} balance {side.balance}"
            )

    # ---- daily job ----------------------------------------------------------------------

    def daily(self, day: date) -> None:
        """The daily job of ``day`` for every enrolled member (idempotent per date)."""
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
            held = rules.tier_reached(self.earned_in_window(member, day))
            if held < member.tier:
                outcome.tier_change = (rules.tiers[member.tier].name, rules.tiers[held].name)
                member.tier = held
            if outcome.points or outcome.tier_change:
                member.outcomes[source] = outcome
                member.events.append(
                    f"  daily {day} {outcome.points:+d}"
                    f"{' tier ' + '->'.join(outcome.tier_change) if outcome.tier_change else ''}"
                    f" balance {member.balance}"
                )

    # ---- results ------------------------------------------------------------------------

    def tier_name(self, member_id: str) -> str:
        return self.rules.tiers[self.members[member_id].tier].name
