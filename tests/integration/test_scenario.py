"""Sixty days of a 500-member programme on one real worker, checked against a reference model.

A seeded scenario (2026-02-01 to 2026-04-01, Europe/Madrid: it contains 28 February of a
non-leap year and the switch to summer time) mixes signups (with referral codes of earlier
members, self-referrals, unknown codes and codes of erased members), members enrolled by
their first sale, birthdays, newsletter coupons (redeemed, expired, used twice, presented by
another member, unknown), missions, silver and gold members, full and partial refunds
(capped, duplicated), duplicated sales and two erases (a later sale refused), plus the
daily job of every day; and the profiling of issue 5: members drifting into ``at_risk_14d``
and ``lapsed_30d`` (win-back coupons, presented in time and too late), morning buyers,
heavy users and diesel drivers entering and leaving their segments, with sales, refunds,
member events and the daily job; and the contract cases of issue 19: refunds out of the
refund window (101 days after the sale; one second past 90 x 24 h across the clock change;
a late refund of a sale a newer sale left out of the window), stale back-dated sales (daily
jobs not counting), a transaction_id and an event_id repeated with other content
(dead-lettered) and repeated as they were after the member changed locale and consent.

Kafka orders nothing across topics, so each day is sent in three steps, each waiting for the
previous one's outputs: the day's member events (and the referral outcomes they cause),
then the day's transactions, then the day's daily job (waiting on the worker's metric of
processed daily commands). Every balance, ledger, tier, coupon (all sources), reward
outcome, segment change (``loyalty.segments``), win_back notification and dead letter of a
refused input is then compared with ``tests/integration/reference.py``, an independent
model of the programme; and every record emitted again under the same id must be byte for
byte the one first emitted.
"""

from __future__ import annotations

import base64
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from loyalty.demo.worker_process import WorkerProcess
from loyalty.schemas.state import decode_state
from loyalty.streams.settings import DEFAULT_PROGRAM, Settings
from loyalty.streams.topics import changelog_topic_name, ensure_topics, send_daily_commands
from tests.integration.harness import isolated_settings
from tests.integration.reference import (
    ACCEPTED,
    NEWSLETTER,
    REFERRER_ERASED,
    SELF_REFERRAL,
    UNKNOWN_REFERRAL_CODE,
    WIN_BACK,
    CouponRecord,
    Reference,
    Rules,
    centiliters,
    epoch_s,
)

SEED = 20260201
MEMBERS = 500
DAYS = 60
START = date(2026, 2, 1)
ZONE = ZoneInfo("Europe/Madrid")
PARTITIONS = 4
MEMBER_KINDS = {"signup", "profile_updated", "newsletter_subscribed", "consents_changed", "erase"}
WAIT_S = 60.0
REFERRAL_WAIT_S = 30.0


# ---------------------------------------------------------------------------------------
# The scenario: what each member does, with abstract references to codes the engine makes.
# ---------------------------------------------------------------------------------------


@dataclass
class Item:
    """One planned input. Codes (coupon, referral) are resolved when it is sent."""

    member: str
    kind: str
    ident: str
    day: int
    seq: int
    at_s: int = 0
    fixed: bool = False
    liters_cl: int = 0
    original: Item | None = None
    coupons: list[tuple[str, ...]] = field(default_factory=list)
    """("own", style) | ("win_back", style) | ("other", member, style) | ("garbage", text);
    "own" is the member's newsletter coupon, "win_back" their latest win-back coupon."""
    referral: tuple[str, ...] | None = None
    """("member", referrer, style) | ("self",) | ("unknown", text)."""
    planned_status: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    resend: str | None = None
    """None, "now" (a retry right after) or "next_day" (a late redelivery)."""
    style: str = "local"
    fuel: str | None = None
    """Fuel of a sale (else one by sequence); a refund carries its sale's fuel."""
    late: bool = False
    """Sent on ``day`` but dated earlier (``at_s``): a back-dated sale."""
    repeat_of: Item | None = None
    """Sent again with the id and content of this earlier item, with ``changes``."""
    changes: dict[str, Any] = field(default_factory=dict)
    expect: str | None = None
    """The dead-letter reason this input is planned to get (the test waits for it; the
    reference model decides on its own)."""

    @property
    def phase(self) -> str:
        return "member" if self.kind in MEMBER_KINDS else "tx"


@dataclass
class Scenario:
    items: list[Item]
    notes: dict[str, str]
    """Members built for one edge case, by what they exercise."""


def local_instant(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    d = START + timedelta(days=day)
    return int(datetime(d.year, d.month, d.day, hour, minute, second, tzinfo=ZONE).timestamp())


def day_index(at_s: int) -> int:
    return (datetime.fromtimestamp(at_s, ZONE).date() - START).days


def stamp(at_s: int, style: str) -> str:
    if style == "Z":
        return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == "utc":
        return datetime.fromtimestamp(at_s, UTC).isoformat()
    return datetime.fromtimestamp(at_s, ZONE).isoformat()


class Planner:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.items: list[Item] = []
        self.counters: Counter[str] = Counter()
        self.sales: dict[str, list[Item]] = defaultdict(list)
        self.enrol_day: dict[str, int] = {}
        self.signup: dict[str, Item] = {}
        self.newsletter_day: dict[str, int] = {}
        self.notes: dict[str, str] = {}

    def _id(self, prefix: str, member: str) -> str:
        self.counters[member + prefix] += 1
        return f"{prefix}-{member}-{self.counters[member + prefix]:03d}"

    def add(self, member: str, kind: str, day: int, **fields: Any) -> Item:
        prefix = {"sale": "pos", "refund": "ref"}.get(kind, "crm")
        item = Item(member, kind, self._id(prefix, member), day, len(self.items), **fields)
        if item.fixed and not item.late:
            assert day_index(item.at_s) == day, item
        roll = self.rng.random()
        item.style = "Z" if roll < 0.2 else "utc" if roll < 0.25 else "local"
        self.items.append(item)
        if kind == "sale":
            self.sales[member].append(item)
        return item

    def sale(self, member: str, day: int, liters_cl: int, **fields: Any) -> Item:
        return self.add(member, "sale", day, liters_cl=liters_cl, **fields)

    def fixed_sale(self, member: str, at_s: int, liters_cl: int, **fields: Any) -> Item:
        return self.sale(member, day_index(at_s), liters_cl, at_s=at_s, fixed=True, **fields)

    def liters(self, low: float, high: float) -> int:
        roll = self.rng.random()
        if roll < 0.03:
            return self.rng.choice([1500, 1501, 1499])
        if roll < 0.04:
            return self.rng.randrange(20, 100)  # under a litre: no fuel points
        if roll < 0.08:
            return self.rng.randrange(int(low), int(high) + 1) * 100  # whole litres
        return self.rng.randrange(int(low * 100), int(high * 100))

    def birth_outside_window(self) -> str:
        year = self.rng.randrange(1950, 2006)
        first = date(2025, 4, 2)
        for _ in range(100):
            md = first + timedelta(days=self.rng.randrange((date(2026, 1, 31) - first).days))
            if (md.month, md.day) not in ((2, 28), (2, 29)):
                return f"{year:04d}-{md.month:02d}-{md.day:02d}"
        raise AssertionError("unreachable")

    def birth_on(self, day: int) -> str:
        d = START + timedelta(days=day)
        return f"{self.rng.randrange(1950, 2006):04d}-{d.month:02d}-{d.day:02d}"


def build_scenario(seed: int = SEED) -> Scenario:
    p = Planner(seed)
    rng = p.rng
    ids = [f"m{index:03d}" for index in range(MEMBERS)]

    # ---- designed members: one edge case each ------------------------------------------
    designed = ids[:15]
    d1, d2, d3, d4, d5, d6, d7, d8, e1, e2, w1, w2, w3, w4, w5 = designed

    # d1: a birthday bonus lifts the member to silver (900 earned + 200), next fill at x1.25.
    p.add(d1, "signup", 1, profile={"birth_date": "1985-02-26", "locale": "es"})
    for day, cl in [(2, 15000), (12, 12500), (22, 12500), (30, 2000)]:
        p.fixed_sale(d1, local_instant(day, 12), cl)
    p.notes[d1] = "birthday bonus crosses the silver threshold at the daily job"
    # d2: earned 900 with the birthday, then a fill crosses 1,000: upgrade on that fill.
    p.add(d2, "signup", 3, profile={"birth_date": "1979-03-10"})
    for day, cl in [(5, 10000), (15, 10000), (25, 10000), (40, 6000), (45, 2000)]:
        p.fixed_sale(d2, local_instant(day, 12), cl)
    p.notes[d2] = "birthday counts towards the tier; a later fill crosses silver"
    # d3: silver by one big fill, fully refunded the same day; a fill still at silver that
    # day, then the daily job downgrades to bronze.
    p.add(d3, "signup", 4, profile={"locale": "it"})
    big = p.fixed_sale(d3, local_instant(6, 10), 48000)
    p.add(d3, "refund", 6, at_s=local_instant(6, 12), fixed=True, original=big, liters_cl=48000)
    p.fixed_sale(d3, local_instant(6, 15), 2000)
    p.fixed_sale(d3, local_instant(14, 11), 2000)
    p.notes[d3] = "full refund of the upgrading fill: silver until the daily job, then bronze"
    # d4: gold, a partial refund takes earned under 5,000 (daily downgrade to silver), then
    # a fill at silver crosses gold again.
    p.add(d4, "signup", 2, profile={"locale": "pl"})
    for day in (3, 10, 17, 24):
        p.fixed_sale(d4, local_instant(day, 11), 60000)
    p.add(
        d4,
        "refund",
        26,
        at_s=local_instant(26, 11),
        fixed=True,
        original=p.sales[d4][-1],
        liters_cl=40000,
    )
    p.fixed_sale(d4, local_instant(28, 11), 10000)
    p.notes[d4] = "gold, partial refund, daily downgrade to silver, back to gold on a fill"
    # d5: three fills with the first exactly 7 days before the third (outside the window),
    # then a fourth the next day completes the mission.
    t0 = local_instant(10, 11)
    for at_s in (t0, t0 + 3 * 86_400, t0 + 7 * 86_400, t0 + 8 * 86_400):
        p.fixed_sale(d5, at_s, 1000)
    p.notes[d5] = "mission window (t - 7 days, t]: exactly 7 days is outside"
    # d6: three fills in 6 days 23.5 hours across the switch to summer time (7 days 0.5 hours
    # on the wall clock): the window is in absolute time.
    for at_s in (
        local_instant(52, 11),  # 2026-03-25 11:00 +01:00
        local_instant(55, 11),
        local_instant(59, 11, 30),  # 2026-04-01 11:30 +02:00
    ):
        p.fixed_sale(d6, at_s, 1200)
    p.notes[d6] = "mission window across the summer-time switch"
    # d7, d8: a coupon presented exactly at its expiry, and one second before it.
    for member, offset, day in ((d7, 0, 5), (d8, -1, 6)):
        p.add(member, "signup", day - 1)
        p.add(member, "newsletter_subscribed", day, at_s=local_instant(day, 9), fixed=True)
        p.newsletter_day[member] = day
        p.fixed_sale(member, local_instant(day + 2, 12), 1000)
        p.fixed_sale(
            member,
            local_instant(day, 9) + 30 * 86_400 + offset,
            2000,
            coupons=[("own", "plain")],
        )
    p.notes[d7] = "coupon presented exactly 30 days after issue: expired"
    p.notes[d8] = "coupon presented 30 days minus one second after issue: redeemed"
    # e1, e2: referrers who are erased later; their codes are then refused.
    for member, day in ((e1, 0), (e2, 2)):
        p.add(member, "signup", day, profile={"email": f"{member}@example.com"})
        p.sale(member, day + 1, p.liters(10, 40))
        p.sale(member, day + 5, p.liters(10, 40))
    p.add(e1, "erase", 20)
    p.add(e2, "erase", 22)
    p.sale(e1, 30, 2000)  # after the erase: refused, dead-lettered member_erased
    p.notes[e1] = "erased on day 20 (a sale on day 30 is refused); its code then refused"
    p.notes[e2] = "erased on day 22; its code then refused"
    # w1: no sale for 30 days: lapsed_30d at the daily job (win-back coupon, notified: the
    # member consented), back 7 days later presenting the code (redeemed, 200 points; the
    # sale leaves lapsed_30d), the same code again 2 days later (already used).
    p.add(w1, "signup", 0, profile={"locale": "es", "consents": {"marketing": True}})
    p.fixed_sale(w1, local_instant(1, 12), 3000, fuel="diesel")
    p.fixed_sale(w1, local_instant(38, 12), 2500, fuel="diesel", coupons=[("win_back", "grouped")])
    p.fixed_sale(w1, local_instant(40, 12), 2000, fuel="diesel", coupons=[("win_back", "plain")])
    p.notes[w1] = (
        "lapsed_30d at the daily job of day 31: win-back coupon and notification; "
        "redeemed on day 38 (leaves lapsed_30d), presented again on day 40: used"
    )
    # w2: a profile update exactly 30 days after the last sale puts the member into
    # lapsed_30d at that event (coupon issued at 08:00, code from the event); presented
    # 15 days later: expired.
    p.add(w2, "signup", 1, profile={"locale": "it", "consents": {"marketing": True}})
    p.fixed_sale(w2, local_instant(3, 12), 2000, fuel="gasoline95")
    p.add(
        w2,
        "profile_updated",
        33,
        at_s=local_instant(33, 8),
        fixed=True,
        profile={"locale": "en"},
    )
    p.fixed_sale(
        w2, local_instant(48, 12), 2000, fuel="gasoline95", coupons=[("win_back", "plain")]
    )
    p.notes[w2] = (
        "lapsed_30d at a member event 30 days after the last sale (coupon issued then); "
        "presented 15 days later: expired"
    )
    # w3: three 55 L morning fills in 5 days (morning_buyer and heavy_user at the third),
    # then three 10 L evening fills: 3 of 5 in the morning still counts (>= 60%), 3 of 6
    # does not; heavy_user left at the daily job of day 31 (the 1st's fill out of the 30
    # days); lapsed on day 42 without marketing consent: coupon, no notification.
    p.add(w3, "signup", 0, profile={"locale": "pl"})
    for day, hour, cl, fuel in (
        (1, 8, 5500, "diesel"),
        (3, 8, 5500, "diesel"),
        (5, 9, 5500, "diesel"),
        (8, 19, 1000, "lpg"),
        (10, 19, 1000, "lpg"),
        (12, 20, 1000, "lpg"),
    ):
        p.fixed_sale(w3, local_instant(day, hour), cl, fuel=fuel)
    p.notes[w3] = (
        "morning_buyer (3 of 3, still at 3 of 5) and heavy_user by sales, morning_buyer left "
        "at 3 of 6, heavy_user left at the daily job when a fill leaves the 30 days"
    )
    # w4: enrolled by an 80 L diesel fill, then 80 L of gasoline95 the next day (heavy_user;
    # the litres tie, the most recent fuel is the favourite: fuel:diesel left); a 20 L
    # refund of the gasoline95 fill takes heavy_user away and diesel back to favourite.
    p.fixed_sale(w4, local_instant(10, 12), 8000, fuel="diesel")
    gasoline = p.fixed_sale(w4, local_instant(11, 12), 8000, fuel="gasoline95")
    p.add(
        w4, "refund", 12, at_s=local_instant(12, 12), fixed=True, original=gasoline, liters_cl=2000
    )
    p.notes[w4] = (
        "heavy_user and favourite fuel changed by a refund (litres back from the sale's day); "
        "lapsed on day 41 without a signup: coupon, no notification"
    )
    # w5: lapsed at the daily job of day 32 (first coupon); on day 40 a back-dated sale of
    # day 12 arrives: evaluated as of day 39 (the last daily job), so 27 days since the last
    # sale: lapsed_30d left, at_risk_14d entered; lapsed again on day 42 (second coupon).
    p.add(w5, "signup", 0, profile={"locale": "en", "consents": {"marketing": True}})
    p.fixed_sale(w5, local_instant(2, 12), 2000, fuel="lpg")
    p.sale(w5, 40, 2500, at_s=local_instant(12, 10), fixed=True, late=True, fuel="lpg")
    p.notes[w5] = (
        "a back-dated sale (day 12, sent on day 40) evaluated as of the last daily job: "
        "leaves lapsed_30d for at_risk_14d, lapses again on day 42 with a second coupon"
    )
    for member in designed[:8] + designed[10:]:
        p.enrol_day[member] = min(item.day for item in p.items if item.member == member)
    p.enrol_day[e1], p.enrol_day[e2] = 0, 2

    # ---- everybody else -----------------------------------------------------------------
    others = ids[15:]
    rng.shuffle(others)
    late = others[:30]  # enrolled by a card scan, sign up in the app later
    buyers = others[30:175]  # enrolled by their first sale, never sign up
    signers = others[175:]  # sign up first (325 members)
    profiles: dict[str, str] = {}
    for member in others:
        roll = rng.random()
        profiles[member] = (
            "fleet"
            if roll < 0.018
            else "heavy"
            if roll < 0.08
            else "regular"
            if roll < 0.55
            else "light"
        )
    for member in signers:
        if rng.random() < 0.08:
            profiles[member] = "dormant"

    signup_day = {m: min(int(rng.expovariate(1 / 12)), 48) for m in signers}
    for member in signers:
        p.enrol_day[member] = signup_day[member]
    first_sale_day = {m: rng.randrange(0, 40) for m in buyers + late}
    for member in buyers + late:
        p.enrol_day[member] = first_sale_day[member]
    late_signup_day = {m: rng.randrange(first_sale_day[m] + 1, 55) for m in late}

    # Birthdays: ~15 within the window after the signup, one on 29 February (bonus on the
    # 28th), one on the signup day, one before the signup (no bonus that year).
    birth: dict[str, str | None] = {}
    for member in signers + late:
        birth[member] = p.birth_outside_window() if rng.random() < 0.9 else None
    window_birthdays = [m for m in signers if signup_day[m] <= 40]
    rng.shuffle(window_birthdays)
    leap_member = next(m for m in window_birthdays if signup_day[m] <= 20)
    birth[leap_member] = "1992-02-29"
    p.notes[leap_member] = "born on 29 February: birthday bonus on 28 February 2026"
    picked = [m for m in window_birthdays if m != leap_member][:14]
    for index, member in enumerate(picked):
        if index == 0:
            birth[member] = p.birth_on(signup_day[member])
            p.notes[member] = "birthday on the signup day"
        elif index == 1 and signup_day[member] > 0:
            birth[member] = p.birth_on(signup_day[member] - 1)
            p.notes[member] = "birthday the day before the signup: no bonus"
        else:
            birth[member] = p.birth_on(rng.randrange(signup_day[member], DAYS))
    late_birthday = next(m for m in late if late_signup_day[m] < 50)
    birth[late_birthday] = p.birth_on(rng.randrange(late_signup_day[late_birthday] + 1, DAYS))
    p.notes[late_birthday] = "enrolled by a sale, birthday after a later signup"

    # Signups, with referral codes of members enrolled on an earlier day.
    referees = [m for m in signers if signup_day[m] >= 2]
    rng.shuffle(referees)
    influencers = rng.sample([m for m in signers + buyers if p.enrol_day[m] <= 3], 5)
    referral_of: dict[str, tuple[str, ...]] = {}
    for member in referees[:95]:
        pool = influencers if rng.random() < 0.4 else signers + buyers + late
        pool = [r for r in pool if r != member and p.enrol_day.get(r, 99) < signup_day[member]]
        if pool:
            typed = "lower" if rng.random() < 0.15 else "plain"
            referral_of[member] = ("member", rng.choice(pool), typed)
    # e1 refers one member before its erase (accepted); three use erased codes later.
    early = [m for m in referees[95:] if 5 <= signup_day[m] <= 15]
    referral_of[early[0]] = ("member", e1, "plain")
    late_referees = [m for m in referees[95:] if signup_day[m] >= 25]
    for member, referrer in zip(late_referees[:3], (e1, e2, e1), strict=True):
        referral_of[member] = ("member", referrer, "plain")
        p.notes[member] = f"signs up with the code of {referrer}, erased before"
    free = [m for m in referees[95:] if m not in referral_of]
    for member, text in zip(
        free[:4], ("ZZZZZZZZ", "QQQQ-7777", "NOTACODE", "12345678"), strict=True
    ):
        referral_of[member] = ("unknown", text)
    erased_referrals = set(late_referees[:3])

    signup_items: dict[str, Item] = {}
    for member in signers:
        profile: dict[str, Any] = {
            "locale": rng.choice(["es", "en", "it", "pl", "es-ES", "fr"]),
            "consents": {"marketing": rng.random() < 0.7},
        }
        if birth[member]:
            profile["birth_date"] = birth[member]
        referral = referral_of.get(member)
        status = None
        if referral is not None:
            if referral[0] == "unknown":
                status = UNKNOWN_REFERRAL_CODE
            elif member in erased_referrals:
                status = REFERRER_ERASED
            else:
                status = ACCEPTED
        item = p.add(
            member,
            "signup",
            signup_day[member],
            profile=profile,
            referral=referral,
            planned_status=status,
        )
        if referral is not None and rng.random() < 0.04:
            item.resend = "now"
        signup_items[member] = item

    # Sales.
    ranges = {
        "light": ((1, 3), (5, 45)),
        "regular": ((3, 9), (8, 65)),
        "heavy": ((10, 16), (40, 95)),
        "fleet": ((8, 14), (250, 600)),
        "dormant": ((0, 0), (0, 0)),
    }
    for member in others:
        (low_n, high_n), (low_l, high_l) = ranges[profiles[member]]
        start = p.enrol_day[member]
        count = rng.randint(low_n, high_n)
        if member in buyers or member in late:
            days = [start] + [rng.randrange(start, DAYS) for _ in range(max(count - 1, 0))]
        else:
            days = [rng.randrange(start, DAYS) for _ in range(count)]
        if profiles[member] in ("regular", "heavy") and rng.random() < 0.3:
            burst = rng.randrange(start, DAYS - 5)
            days += [burst, burst + rng.randint(1, 3), burst + rng.randint(4, 6)]
        for day in sorted(days):
            p.sale(member, day, p.liters(low_l, high_l))

    # Late signups of members enrolled by a sale: three type their own code.
    for index, member in enumerate(late):
        profile = {"locale": "es"}
        if birth[member]:
            profile["birth_date"] = birth[member]
        referral = ("self",) if index < 3 else None
        p.add(
            member,
            "signup",
            late_signup_day[member],
            profile=profile,
            referral=referral,
            planned_status=SELF_REFERRAL if referral else None,
        )
        if referral:
            note = "enrolled by a sale, then signs up with its own referral code"
            p.notes[member] = "; ".join(filter(None, (p.notes.get(member), note)))

    # Newsletter subscriptions (~40%) and what each subscriber does with the coupon.
    eligible = [m for m in others if p.enrol_day[m] <= 50]
    subscribers = rng.sample(eligible, 190)
    for member in subscribers:
        if member in signers:
            day = rng.randrange(signup_day[member], min(signup_day[member] + 10, 52))
        elif member in late:
            day = rng.randrange(late_signup_day[member], DAYS)
        else:
            day = rng.randrange(first_sale_day[member] + 1, 52)
        p.add(member, "newsletter_subscribed", day)
        p.newsletter_day[member] = day
        if rng.random() < 0.05 and day < DAYS - 1:
            p.add(member, "newsletter_subscribed", rng.randrange(day + 1, DAYS))
    subscribers += [d7, d8]

    def sale_between(member: str, first: int, last: int) -> Item | None:
        """A sale of the member on a day in [first, last] (added if there is none)."""
        if first > last:
            return None
        candidates = [
            s
            for s in p.sales[member]
            if first <= s.day <= last and not s.fixed and s.original is None
        ]
        if candidates and rng.random() < 0.7:
            return rng.choice(candidates)
        return p.sale(member, rng.randrange(first, last + 1), p.liters(8, 60))

    def style() -> str:
        return rng.choices(["plain", "lower", "grouped", "spaced"], [70, 15, 10, 5])[0]

    for member in subscribers[:-2]:
        issued = p.newsletter_day[member]
        valid_last = min(issued + 29, DAYS - 1)
        roll = rng.random()
        if roll < 0.6:
            target = sale_between(member, issued + 1, valid_last)
            if target:
                target.coupons.append(("own", style()))
        elif roll < 0.66:
            target = sale_between(member, issued + 31, DAYS - 1) or sale_between(
                member, issued + 1, valid_last
            )
            if target:
                target.coupons.append(("own", style()))
        elif roll < 0.73:
            first = sale_between(member, issued + 1, max(issued + 1, valid_last - 3))
            if first:
                first.coupons.append(("own", style()))
                second = sale_between(member, first.day + 1, valid_last)
                if second and second is not first:
                    second.coupons.append(("own", "plain"))
        elif roll < 0.75:
            target = sale_between(member, issued + 1, valid_last)
            if target:
                target.coupons += [("own", "plain"), ("own", "lower")]
        elif roll < 0.78:
            target = sale_between(member, issued + 1, DAYS - 1)
            if target:
                target.coupons.append(("garbage", rng.choice(["NOPE-1234", "SPRING10"])))
    # A few present another subscriber's code (issued on an earlier day).
    thieves = rng.sample([m for m in subscribers[:-2] if p.sales[m]], 8)
    for member in thieves:
        target = rng.choice([s for s in p.sales[member] if not s.fixed])
        victims = [v for v in subscribers[:-2] if v != member and p.newsletter_day[v] < target.day]
        if victims:
            target.coupons.append(("other", rng.choice(victims), "plain"))

    # Refunds of about 5% of the sales: full, partial, partial twice, more than the sale,
    # some sent twice, a few after a full refund (nothing left to refund).
    candidates = [s for member in others for s in p.sales[member] if not s.fixed]
    for sale in rng.sample(candidates, int(len(candidates) * 0.05)):
        day = sale.day if rng.random() < 0.4 else min(sale.day + rng.randint(1, 7), DAYS - 1)
        roll = rng.random()
        if roll < 0.45:
            refunds = [sale.liters_cl]
        elif roll < 0.8:
            refunds = [max(1, sale.liters_cl * rng.randint(10, 90) // 100)]
        elif roll < 0.9:
            refunds = [max(1, sale.liters_cl // 3), sale.liters_cl]
        elif roll < 0.96:
            refunds = [sale.liters_cl + 500]
        else:
            refunds = [sale.liters_cl, max(1, sale.liters_cl // 2)]
        for liters_cl in refunds:
            item = p.add(sale.member, "refund", day, original=sale, liters_cl=liters_cl)
            if rng.random() < 0.2:
                item.resend = "now" if rng.random() < 0.5 or day == DAYS - 1 else "next_day"

    # Duplicated sales (POS retries and late redeliveries), profile and consent changes.
    for sale in rng.sample(candidates, 40):
        sale.resend = "now" if rng.random() < 0.6 or sale.day == DAYS - 1 else "next_day"
    for member in rng.sample(signers, 15):
        day = rng.randrange(signup_day[member], DAYS)
        p.add(member, "consents_changed", day, profile={"consents": {"marketing": False}})
    for member in rng.sample(signers, 10):
        day = rng.randrange(signup_day[member], DAYS)
        p.add(member, "profile_updated", day, profile={"locale": "en", "phone": "+34600000000"})

    _plan_mission_and_tier_rules(p)
    assign_times(p.items, rng)
    add_contract_cases(p, seed)
    return Scenario(p.items, p.notes)


def _plan_mission_and_tier_rules(p: Planner) -> None:
    """Five members, one rule of issue 19 each (README, `[[missions]]` and `[tiers]`); their
    sales are all fixed in time, and the random draws they make are given back, so the
    rest of the scenario is the same with them or without."""
    drawn = p.rng.getstate()
    # mr1: a sale refunded in full no longer counts: days 3, 4 (day 3 refunded), 5: no
    # mission; day 6 completes it (4, 5, 6).
    first = p.fixed_sale("mr1", local_instant(3, 12), 1000)
    p.fixed_sale("mr1", local_instant(4, 12), 1000)
    p.add("mr1", "refund", 4, at_s=local_instant(4, 15), fixed=True, original=first, liters_cl=1000)
    p.fixed_sale("mr1", local_instant(5, 12), 1000)
    p.fixed_sale("mr1", local_instant(6, 12), 1000)
    p.notes["mr1"] = "mission: a sale refunded in full does not count"
    # mr2: completed at A (day 5, 12:00); three sales in 7 days inside the cooldown, the
    # last one second before A + 30 x 24 h; the one at exactly A + 30 x 24 h completes it.
    award = local_instant(5, 12)
    for at_s in (award - 2 * 86_400, award - 86_400, award):
        p.fixed_sale("mr2", at_s, 1000)
    for at_s in (award + 28 * 86_400, award + 29 * 86_400, award + 30 * 86_400 - 1):
        p.fixed_sale("mr2", at_s, 1000)
    p.fixed_sale("mr2", award + 30 * 86_400, 1000)
    p.notes["mr2"] = "mission cooldown: one second before 30 x 24 h no, exactly then yes"
    # mr3: sales of days 20 and 21, then one dated day 19 sent on day 22: its window ends at
    # it, so the later two do not count; a sale on day 23 completes the mission (19-23).
    p.fixed_sale("mr3", local_instant(20, 12), 1000)
    p.fixed_sale("mr3", local_instant(21, 12), 1000)
    p.sale("mr3", 22, 1000, at_s=local_instant(19, 12), fixed=True, late=True)
    p.fixed_sale("mr3", local_instant(23, 12), 1000)
    p.notes["mr3"] = "mission: a late sale does not count the sales dated after it"
    # mr4: 600 earned on day 30 (250 L and the welcome bonus); a sale dated day 29 (225 L,
    # 450) sent on day 31 crosses 1,000 in the window ending on day 30, the latest day on
    # record: silver on the late sale (as of day 29 it would count 450 alone); a fill on
    # day 33 earns at silver and completes the mission (29, 30, 33).
    p.fixed_sale("mr4", local_instant(30, 12), 25000)
    p.sale("mr4", 31, 22500, at_s=local_instant(29, 12), fixed=True, late=True)
    p.fixed_sale("mr4", local_instant(33, 12), 2000)
    p.notes["mr4"] = "tier: a late credit is judged as of the latest day on record"
    # mr5: silver on day 10 (450 L and the welcome bonus: 1,000); a 20 L sale dated day 8
    # sent on day 12 earns at silver (x1.25 with the volume x2: 50).
    p.fixed_sale("mr5", local_instant(10, 12), 45000)
    p.sale("mr5", 12, 2000, at_s=local_instant(8, 12), fixed=True, late=True)
    p.notes["mr5"] = "tier: a late sale earns at the tier held when it is applied"
    for member in ("mr1", "mr2", "mr3", "mr4", "mr5"):
        p.enrol_day[member] = min(item.day for item in p.items if item.member == member)
    p.rng.setstate(drawn)


def add_contract_cases(p: Planner, seed: int) -> None:
    """Members for the refund window, staleness and repeated ids (issue 19), with fixed
    event times and a random source of their own, so the scenario above is unchanged."""
    p.rng = random.Random(seed + 19)

    def dated(text: str) -> int:
        return int(datetime.fromisoformat(text).timestamp())

    def late_sale(member: str, day: int, at_s: int, liters_cl: int, **fields: Any) -> Item:
        return p.sale(member, day, liters_cl, at_s=at_s, fixed=True, late=True, **fields)

    def refund(
        member: str,
        original: Item,
        at_s: int,
        liters_cl: int,
        sent_on: int | None = None,
        expect: str | None = None,
    ) -> Item:
        """A refund dated ``at_s``, sent that day or, back-dated, on day ``sent_on``."""
        return p.add(
            member,
            "refund",
            day_index(at_s) if sent_on is None else sent_on,
            at_s=at_s,
            fixed=True,
            late=sent_on is not None,
            original=original,
            liters_cl=liters_cl,
            expect=expect,
        )

    def repeat(original: Item, day: int, **changes: Any) -> Item:
        """``original`` sent again on ``day``, with ``changes`` to its content."""
        item = p.add(
            original.member,
            original.kind,
            day,
            at_s=original.at_s,
            fixed=True,
            late=True,
            repeat_of=original,
            changes=changes,
        )
        item.ident = original.ident
        if changes:
            conflict = "event_id_conflict" if item.phase == "member" else "transaction_id_conflict"
            item.expect = conflict
        return item

    r1, r2, r3, r4, c1, c2 = "r1", "r2", "r3", "r4", "c1", "c2"
    # r1 (issue 19, defect 1): a 20 L sale of 2025-12-20 refunded on 2026-03-31, 101 days
    # later: out of the window, the balance keeps its 140 points.
    s1 = late_sale(r1, 0, dated("2025-12-20T12:00:00+01:00"), 2000)
    refund(r1, s1, dated("2026-03-31T12:00:00+02:00"), 2000, None, "unknown_original_transaction")
    p.notes[r1] = "refund 101 days after its sale: dead-lettered unknown_original_transaction"
    # r2: the window is exact time: 90 x 24 h after 10:00 +01:00 on 2025-12-30 is 11:00 +02:00
    # on 2026-03-30 (summer time began on 03-29): a refund then is applied, one a second
    # later refused (calendar days would take the whole 30th).
    s2 = late_sale(r2, 0, dated("2025-12-30T10:00:00+01:00"), 2000)
    refund(r2, s2, dated("2026-03-30T11:00:00+02:00"), 1000)
    refund(r2, s2, dated("2026-03-30T11:00:01+02:00"), 500, None, "unknown_original_transaction")
    p.notes[r2] = "refunds at 90 x 24 h after the sale (applied) and one second later (refused)"
    # r3: a late refund dated 81 days after its sale, sent after a sale 102 days after it:
    # the newest transaction left the sale out of the window.
    s3 = late_sale(r3, 0, dated("2025-12-01T12:00:00+01:00"), 3000)
    p.fixed_sale(r3, local_instant(10, 12), 1000)
    p.fixed_sale(r3, local_instant(40, 12), 1000)
    refund(r3, s3, dated("2026-02-20T12:00:00+01:00"), 3000, 45, "unknown_original_transaction")
    p.notes[r3] = "a late refund of a sale forgotten since a newer sale: refused"
    # r4: staleness counts transactions only: on day 59, 58 daily jobs after its only sale,
    # a sale dated 88 days before that sale is applied, one dated 90 days and a second
    # before it is stale.
    first = p.fixed_sale(r4, local_instant(0, 12), 1000)
    late_sale(r4, 59, first.at_s - 88 * 86_400, 1500)
    late_sale(r4, 59, first.at_s - 90 * 86_400 - 1, 1500, expect="stale_transaction")
    p.notes[r4] = "late sales 88 days (applied) and 90 days + 1 s (stale) before the newest"
    # c1 (defect 2): sale of 20 L, the same transaction_id with 25 L the next day, and an
    # identical repeat after it.
    sale = p.fixed_sale(c1, local_instant(5, 12), 2000)
    repeat(sale, 6, liters=25.0)
    repeat(sale, 7)
    p.notes[c1] = "a transaction_id repeated with other litres: transaction_id_conflict"
    # c2: signed up in es with consent; a sale; then the locale and consent change; the
    # sale and the signup sent again as they were (re-emitted byte for byte) and the signup
    # with another locale (event_id_conflict).
    profile: dict[str, Any] = {"locale": "es", "consents": {"marketing": True}}
    signup = p.add(c2, "signup", 2, at_s=local_instant(2, 8), fixed=True, profile=profile)
    bought = p.fixed_sale(c2, local_instant(3, 12), 2000)
    profile = {"locale": "it", "consents": {"marketing": False}}
    p.add(c2, "profile_updated", 4, at_s=local_instant(4, 8), fixed=True, profile=profile)
    repeat(bought, 5)
    repeat(signup, 5)
    repeat(signup, 6, locale="pl")
    p.notes[c2] = "sale and signup repeated after a locale change: identical records"


def assign_times(items: list[Item], rng: random.Random) -> None:
    """Event times: member events 07:00-09:59, transactions 10:00-22:59 (local), in the
    order each member's items of a day were planned; a refund after the sale it refunds."""
    groups: dict[tuple[str, int, str], list[Item]] = defaultdict(list)
    for item in items:
        if not item.fixed:
            groups[(item.member, item.day, item.phase)].append(item)
    for (_, day, phase), group in groups.items():
        first, last = (7 * 3600, 10 * 3600 - 1) if phase == "member" else (10 * 3600, 23 * 3600)
        seconds = sorted(rng.randrange(first, last) for _ in group)
        for item, second in zip(sorted(group, key=lambda i: i.seq), seconds, strict=True):
            hour, rest = divmod(second, 3600)
            item.at_s = local_instant(day, hour, rest // 60, rest % 60)
    for item in items:
        if item.original is not None and item.at_s <= item.original.at_s:
            item.at_s = item.original.at_s + rng.randrange(60, 3600)
            if day_index(item.at_s) != item.day:
                item.at_s = item.original.at_s + 30
            assert day_index(item.at_s) == item.day, item


# ---------------------------------------------------------------------------------------
# The engine's outputs, indexed as they arrive.
# ---------------------------------------------------------------------------------------


def reward_source(reward: dict[str, Any]) -> str:
    """The model's name of what caused a reward event (``referral:<role>:<signup id>`` for
    a referral outcome)."""
    source = reward["source_event_id"]
    if reward.get("referral"):
        return f"referral:{reward['referral']['role']}:{source}"
    if reward["source_type"] == "referral":
        return f"referral:?:{source}"
    return source


class Outputs:
    def __init__(self, settings: Settings) -> None:
        topics = settings.topics
        self.topics = topics
        self.consumer = KafkaConsumer(
            topics.ledger,
            topics.rewards,
            topics.notifications,
            topics.segments,
            topics.deadletter,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.ledger: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.rewards: dict[str, dict[str, Any]] = {}
        self.by_source: dict[tuple[str, str, str], dict[str, Any]] = {}
        """(member, source_type, source_event_id) -> reward event."""
        self.referral_rewards: dict[tuple[str, str], dict[str, Any]] = {}
        """(member, signup event id) -> reward event carrying ``referral``."""
        self.reward_order: dict[str, list[str]] = defaultdict(list)
        """Member -> the sources of their reward events, in the order the engine made them."""
        self.referral_code: dict[str, str] = {}
        self.newsletter_code: dict[str, str] = {}
        self.win_back_code: dict[str, str] = {}
        """Member -> the code of their latest win-back coupon seen."""
        self.issued: list[tuple[str, str, int, str]] = []
        """(owner, source, issue time, code) of every coupon an output names."""
        self.segments: dict[str, list[dict[str, Any]]] = defaultdict(list)
        """Member -> their segment events (deduplicated by id), in the order made."""
        self.segment_ids: set[str] = set()
        self.win_back_notices: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.deadletters: list[dict[str, Any]] = []
        self.notification_ids: set[str] = set()
        self.tier_notices: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        """Member -> (previous tier, tier) of their ``tier_changed`` notifications."""
        self.records = 0
        self.first_bytes: dict[tuple[str, str], bytes] = {}
        """(topic, record id) -> the record as first emitted."""
        self.changed: list[str] = []
        """Records emitted again under the same id with other bytes (README: a replay
        re-emits byte-identical records)."""

    def _check_repeat(self, topic: str, record_id: str, raw: bytes) -> None:
        first = self.first_bytes.setdefault((topic, record_id), raw)
        if first != raw:
            self.changed.append(f"{topic} {record_id}: first {first!r}, again {raw!r}")

    def poll(self, timeout_ms: int = 200) -> None:
        for batch in self.consumer.poll(timeout_ms=timeout_ms).values():
            for record in batch:
                self.records += 1
                value = orjson.loads(record.value)
                for id_field in ("entry_id", "reward_id", "notification_id", "segment_event_id"):
                    if id_field in value:
                        self._check_repeat(record.topic, value[id_field], record.value)
                        break
                if record.topic == self.topics.ledger:
                    self.ledger[value["member_id"]].setdefault(value["entry_id"], value)
                elif record.topic == self.topics.rewards:
                    if value["reward_id"] in self.rewards:
                        continue
                    self.rewards[value["reward_id"]] = value
                    member = value["member_id"]
                    key = (member, value["source_type"], value["source_event_id"])
                    self.by_source.setdefault(key, value)
                    self.reward_order[member].append(reward_source(value))
                    if value.get("referral"):
                        self.referral_rewards.setdefault((member, value["source_event_id"]), value)
                    issued = value.get("coupon_issued")
                    if issued:
                        newsletter = value["source_type"] == "newsletter_subscribed"
                        source = NEWSLETTER if newsletter else WIN_BACK
                        at_s = epoch_s(value["occurred_at"])
                        self.issued.append((member, source, at_s, issued["code"]))
                        if newsletter:
                            self.newsletter_code.setdefault(member, issued["code"])
                        else:
                            self.win_back_code[member] = issued["code"]
                elif record.topic == self.topics.notifications:
                    if value["notification_id"] in self.notification_ids:
                        continue
                    self.notification_ids.add(value["notification_id"])
                    if value["kind"] == "tier_changed":
                        data = value["data"]
                        self.tier_notices[value["member_id"]][
                            (data["previous_tier"], data["tier"])
                        ] += 1
                    if value["kind"] == "welcome" and value["data"].get("referral_code"):
                        self.referral_code.setdefault(
                            value["member_id"], value["data"]["referral_code"]
                        )
                    if value["kind"] == "win_back":
                        member, code = value["member_id"], value["data"]["code"]
                        self.win_back_notices[member].append(value)
                        self.win_back_code[member] = code
                        at_s = epoch_s(value["occurred_at"])
                        self.issued.append((member, WIN_BACK, at_s, code))
                elif record.topic == self.topics.segments:
                    if value["segment_event_id"] not in self.segment_ids:
                        self.segment_ids.add(value["segment_event_id"])
                        self.segments[value["member_id"]].append(value)
                else:
                    self.deadletters.append(value)

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            self.poll()
        return True

    def drain(self, timeout: float = 60.0) -> None:
        """Read every output record written so far (the worker has stopped)."""
        deadline = time.monotonic() + timeout
        while True:
            assigned = list(self.consumer.assignment())
            ends = self.consumer.end_offsets(assigned) if assigned else {}
            if assigned and all(self.consumer.position(tp) >= ends[tp] for tp in assigned):
                return
            if time.monotonic() > deadline:
                raise AssertionError("timed out reading the output topics to their end")
            self.poll()

    def close(self) -> None:
        self.consumer.close()


def daily_processed(worker: WorkerProcess, topic: str) -> float:
    total = 0.0
    for line in worker.metrics().splitlines():
        match = re.match(r"loyalty_events_total\{(.*)\}\s+(\S+)", line)
        if match and f'topic="{topic}"' in match[1] and 'outcome="processed"' in match[1]:
            total += float(match[2])
    return total


def read_table(settings: Settings) -> dict[str, bytes | None]:
    """The member table as its changelog holds it at the end: last value per member."""
    topic = changelog_topic_name(settings.app_id, "member_to_state")
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        deadline = time.monotonic() + 30
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)  # metadata polling interval
            partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"no changelog topic {topic}"
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        table: dict[str, bytes | None] = {}
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            if time.monotonic() > deadline + 60:
                raise AssertionError("timed out reading the member table changelog")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    table[record.key.decode()] = record.value
        return table
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------
# Sending the scenario day by day.
# ---------------------------------------------------------------------------------------


def present(code: str, style: str) -> str:
    if style == "lower":
        return code.lower()
    if style == "grouped":
        return f"{code[:5]}-{code[5:]}"
    if style == "spaced":
        return " ".join(code[i : i + 3] for i in range(0, len(code), 3)).lower()
    return code


class Runner:
    def __init__(self, settings: Settings, worker: WorkerProcess, outputs: Outputs) -> None:
        self.settings = settings
        self.worker = worker
        self.outputs = outputs
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
        self.log: list[tuple[str, Any]] = []
        """What was sent, in order: ("member" | "tx", value) or ("daily", date)."""
        self.sent: dict[str, dict[str, Any]] = {}
        self.referral_live: bool | None = None
        self.problems: list[str] = []
        self.dailies = 0
        self.letters_expected: Counter[str] = Counter()
        """Dead letters expected so far, by reason."""
        self.erased: set[str] = set()

    def code_of(self, kind: str, member: str) -> str | None:
        """The member's referral, newsletter ("coupon") or latest win-back code."""
        table = {
            "referral": self.outputs.referral_code,
            "coupon": self.outputs.newsletter_code,
            "win_back": self.outputs.win_back_code,
        }[kind]
        self.outputs.wait(lambda: member in table, 30, f"the {kind} code of {member}")
        code = table.get(member)
        if code is None:
            self.problems.append(f"no {kind} code seen for {member}")
        return code

    def value(self, item: Item) -> dict[str, Any]:
        if item.repeat_of is not None:
            return {**self.value(item.repeat_of), **item.changes}
        if item.ident in self.sent:
            return self.sent[item.ident]
        when = stamp(item.at_s, item.style)
        if item.phase == "member":
            value: dict[str, Any] = {
                "event_id": item.ident,
                "member_id": item.member,
                "type": item.kind,
                "occurred_at": when,
                **item.profile,
            }
            if item.referral is not None:
                if item.referral[0] == "unknown":
                    value["referral_code"] = item.referral[1]
                else:
                    owner = item.member if item.referral[0] == "self" else item.referral[1]
                    code = self.code_of("referral", owner) or "MISSING0"
                    style = item.referral[2] if len(item.referral) > 2 else "plain"
                    value["referral_code"] = present(code, style)
        else:
            fuel = item.fuel or ["diesel", "gasoline95", "gasoline98", "lpg"][item.seq % 4]
            if item.original is not None:
                fuel = self.sent[item.original.ident]["fuel_type"]  # a refund of that fuel
            value = {
                "transaction_id": item.ident,
                "member_id": item.member,
                "station_id": f"station-{item.seq % 23:02d}",
                "occurred_at": when,
                "fuel_type": fuel,
                "liters": item.liters_cl / 100,
                "amount": round(item.liters_cl * 0.0159, 2),
                "currency": "EUR",
            }
            if item.kind == "refund":
                assert item.original is not None
                value["type"] = "refund"
                value["original_transaction_id"] = item.original.ident
            codes = []
            for coupon in item.coupons:
                if coupon[0] == "garbage":
                    codes.append(coupon[1])
                elif coupon[0] == "win_back":
                    code = self.code_of("win_back", item.member) or "MISSINGWB"
                    codes.append(present(code, coupon[-1]))
                else:
                    owner = item.member if coupon[0] == "own" else coupon[1]
                    code = self.code_of("coupon", owner) or "MISSINGCPN"
                    codes.append(present(code, coupon[-1]))
            if codes:
                value["coupon_codes"] = codes
        self.sent[item.ident] = value
        return value

    def send(self, phase: str, batch: list[Item]) -> list[dict[str, Any]]:
        topics = self.settings.topics
        topic = topics.members if phase == "member" else topics.transactions
        values = []
        for item in batch:
            value = self.value(item)
            values.append(value)
            self.producer.send(topic, key=item.member.encode(), value=orjson.dumps(value))
            self.log.append((phase, value))
        self.producer.flush()
        return values

    def wait_rewards(
        self,
        values: list[dict[str, Any]],
        refused: int,
        what: str,
        planned: list[str | None],
    ) -> None:
        """Wait for the reward event of every input, the dead letter of every input sent
        for an erased member and of every input ``planned`` to get one (the reason, by
        input; None for none: such an input has no reward event of its own); fail at once
        on any other dead letter."""
        expected = set()
        for value, reason in zip(values, planned, strict=True):
            if reason is not None:
                self.letters_expected[reason] += 1
            elif value["member_id"] not in self.erased:
                ident = value.get("transaction_id") or value["event_id"]
                expected.add((value["member_id"], value.get("type", "sale"), ident))
        self.letters_expected["member_erased"] += refused

        def unexpected() -> list[dict[str, Any]]:
            seen: Counter[str] = Counter()
            extra = []
            for letter in self.outputs.deadletters:
                reason = letter.get("reason") or ""
                seen[reason] += 1
                if seen[reason] > self.letters_expected[reason]:
                    extra.append(letter)
            return extra

        def missing_letters() -> Counter[str]:
            seen = Counter(d.get("reason") or "" for d in self.outputs.deadletters)
            return self.letters_expected - seen

        ok = self.outputs.wait(
            lambda: (
                bool(unexpected())
                or (expected <= self.outputs.by_source.keys() and not missing_letters())
            ),
            WAIT_S,
            what,
        )
        if unexpected():
            raise AssertionError(f"unexpected dead letters: {unexpected()[:3]}")
        if not ok:
            missing = sorted(expected - self.outputs.by_source.keys())
            raise AssertionError(
                f"timed out waiting for {what}: missing {missing[:10]}; "
                f"dead letters not seen {dict(missing_letters())}"
            )

    def wait_referrals(self, signups: list[tuple[dict[str, Any], Item]]) -> None:
        if not signups or self.referral_live is False:
            return
        expected = set()
        for value, item in signups:
            expected.add((item.member, value["event_id"]))
            if item.planned_status == ACCEPTED and item.referral:
                expected.add((item.referral[1], value["event_id"]))
        ok = self.outputs.wait(
            lambda: expected <= self.outputs.referral_rewards.keys(),
            REFERRAL_WAIT_S,
            "referral outcomes",
        )
        if self.referral_live is None:
            self.referral_live = bool(self.outputs.referral_rewards)
        if not ok:
            missing = sorted(expected - self.outputs.referral_rewards.keys())
            self.problems.append(f"referral outcomes never arrived: {missing[:10]}")

    def daily(self, day: date) -> None:
        send_daily_commands(self.settings, day)
        self.log.append(("daily", day))
        self.dailies += 1
        wanted = self.dailies * self.settings.partitions
        topic = self.settings.topics.daily
        deadline = time.monotonic() + WAIT_S
        while daily_processed(self.worker, topic) < wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"daily job of {day} not processed after {WAIT_S}s")
            self.outputs.poll(timeout_ms=50)

    def run(self, scenario: Scenario) -> None:
        by_day: dict[tuple[int, str], list[Item]] = defaultdict(list)
        for item in scenario.items:
            by_day[(item.day, item.phase)].append(item)
            if item.resend == "next_day":
                by_day[(item.day + 1, item.phase)].insert(0, item)
        erase_day = {i.member: i.day for i in scenario.items if i.kind == "erase"}
        for day in range(DAYS):
            for phase in ("member", "tx"):
                batch: list[Item] = []
                for item in sorted(by_day[(day, phase)], key=lambda i: (i.at_s, i.seq)):
                    batch.append(item)
                    if item.resend == "now":
                        batch.append(item)
                refused = sum(
                    1 for i in batch if i.member in erase_day and erase_day[i.member] < day
                )
                values = self.send(phase, batch)
                planned = [item.expect for item in batch]
                self.wait_rewards(values, refused, f"the {phase} events of day {day}", planned)
                for item in batch:
                    if item.kind == "erase":
                        self.erased.add(item.member)
                if phase == "member":
                    signups = [
                        (value, item)
                        for value, item in zip(values, batch, strict=True)
                        if item.kind == "signup" and item.referral is not None
                    ]
                    self.wait_referrals(signups)
            self.daily(START + timedelta(days=day))

    def close(self) -> None:
        self.producer.close()


# ---------------------------------------------------------------------------------------
# Comparison.
# ---------------------------------------------------------------------------------------


def replay(
    log: list[tuple[str, Any]],
    outputs: Outputs,
    table: dict[str, bytes | None],
    referrals: bool = True,
) -> Reference:
    reference = Reference(Rules.load(DEFAULT_PROGRAM), referrals=referrals)
    reference.order = {
        member: {source: index for index, source in reversed(list(enumerate(sources)))}
        for member, sources in outputs.reward_order.items()
    }
    for member, code in outputs.referral_code.items():
        reference.learn_referral_code(code, member)
    # Coupon codes, as the outputs and the final table name them: which issue each is.
    for member, source, issued_s, code in outputs.issued:
        reference.learn_coupon_code(code, member, source, issued_s)
    for member, raw in table.items():
        if raw is not None:
            for coupon in decode_state(raw).coupons.values():
                reference.learn_coupon_code(coupon.code, member, coupon.source, coupon.issued_s)
    for kind, value in log:
        if kind == "member":
            reference.member_event(value)
        elif kind == "tx":
            reference.transaction(value)
        else:
            reference.daily(value)
    reference.settle()
    return reference


def engine_coupon(issued: dict[str, Any] | None) -> tuple[str, str, int, int] | None:
    if not issued:
        return None
    return (issued["code"], issued["benefit"], issued["value"], epoch_s(issued["expires_at"]))


def model_coupon(coupon: CouponRecord | None) -> tuple[str | None, str, int, int] | None:
    if coupon is None:
        return None
    return (coupon.code, coupon.benefit, coupon.value, coupon.expires_s)


def engine_outcome(reward: dict[str, Any]) -> dict[str, Any]:
    kind = reward["source_type"]
    out: dict[str, Any] = {"points": reward["points"]}
    change = reward.get("tier_change")
    out["tier_change"] = (change["from"], change["to"]) if change else None
    if kind == "sale":
        out["tier"] = reward.get("tier")
        out["enrolled"] = reward["enrolled"]
        coupons = reward.get("coupons")
        out["coupons"] = [(c["code"], c["status"]) for c in coupons] if coupons else None
        out["missions"] = reward.get("missions")
    elif kind == "refund":
        out["refunded_cl"] = centiliters(reward["reversal"]["refunded_liters"])
    elif kind in MEMBER_KINDS:
        out = {"enrolled": reward["enrolled"]}
    out["coupon_issued"] = engine_coupon(reward.get("coupon_issued"))
    if reward.get("referral"):
        ref = reward["referral"]
        out["referral"] = (ref["code"], ref["status"], ref["role"])
    return out


def expected_outcome(outcome: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"points": outcome.points, "tier_change": outcome.tier_change}
    if outcome.kind == "sale":
        out.update(
            tier=outcome.tier,
            enrolled=outcome.enrolled,
            coupons=outcome.coupons,
            missions=outcome.missions,
        )
    elif outcome.kind == "refund":
        out["refunded_cl"] = outcome.refunded_cl
    elif outcome.kind in MEMBER_KINDS:
        out = {"enrolled": outcome.enrolled}
    out["coupon_issued"] = model_coupon(outcome.coupon_issued)
    if outcome.referral:
        out["referral"] = outcome.referral
    return out


SegmentRow = tuple[str, str, str, int]
"""(segment, change, source event id, event time)."""


def by_cause(rows: list[SegmentRow]) -> list[SegmentRow]:
    """Segment changes in order; within one run of the same change of one evaluation (same
    source and time), by segment name: the README orders an event's ``left`` changes before
    its ``entered`` ones, and says nothing of the order of the segments."""
    out: list[SegmentRow] = []
    run: list[SegmentRow] = []
    for row in rows:
        if run and row[1:] != run[0][1:]:
            out += sorted(run)
            run = []
        run.append(row)
    return out + sorted(run)


def engine_segments(outputs: Outputs, member_id: str) -> list[SegmentRow]:
    return [
        (e["segment"], e["change"], e["source_event_id"], epoch_s(e["occurred_at"]))
        for e in outputs.segments.get(member_id, [])
    ]


def model_segments(reference: Reference, member_id: str) -> list[SegmentRow]:
    model = reference.members[member_id]
    return [(c.segment, c.change, c.source_event_id, c.at_s) for c in model.segment_changes]


def table_coupons(coupons: Any) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Coupons by (source, issue time): (code, benefit, value, expiry, used by)."""
    return {
        (c.source, c.issued_s): (c.code, c.benefit, c.value, c.expires_s, c.used_by)
        for c in coupons
    }


ACCOUNT_REASONS = {
    "unknown_original_transaction",
    "stale_transaction",
    "transaction_id_conflict",
    "event_id_conflict",
}
"""Dead-letter reasons of well-formed inputs the member's account refuses."""


def engine_rejections(outputs: Outputs) -> dict[str, Counter[tuple[str, str]]]:
    """Member -> (input id, reason) of the engine's dead letters of ``ACCOUNT_REASONS``."""
    rejected: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for letter in outputs.deadletters:
        if letter.get("reason") in ACCOUNT_REASONS:
            value = orjson.loads(base64.b64decode(letter["value_b64"]))
            ident = value.get("transaction_id") or value.get("event_id")
            rejected[value["member_id"]][(ident, letter["reason"])] += 1
    return rejected


def compare(
    reference: Reference, outputs: Outputs, table: dict[str, bytes | None]
) -> dict[str, list[str]]:
    """Differences per member (empty when everything matches)."""
    diffs: dict[str, list[str]] = defaultdict(list)
    zone = reference.rules.zone
    engine_rewards: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for reward in outputs.rewards.values():
        engine_rewards[reward["member_id"]][reward_source(reward)] = reward
    rejections = engine_rejections(outputs)
    members = (
        set(reference.members)
        | set(rejections)
        | set(outputs.ledger)
        | set(table)
        | set(engine_rewards)
        | set(outputs.segments)
    )
    for member_id in sorted(members):
        model = reference.members.get(member_id)
        if model is None:
            diffs[member_id].append("the engine has outputs for a member the model never saw")
            continue
        if rejections.get(member_id, Counter()) != Counter(model.rejected):
            diffs[member_id].append(
                f"dead letters: engine {dict(rejections.get(member_id, {}))}, "
                f"model {model.rejected}"
            )
        entries = list(outputs.ledger.get(member_id, {}).values())
        got = Counter((e["reason"], e["delta"]) for e in entries)
        want = model.ledger_multiset()
        if got != want:
            diffs[member_id].append(
                f"ledger: missing {dict(want - got)}, unexpected {dict(got - want)}"
            )
        latest = entries[-1]["balance_after"] if entries else 0
        total = sum(e["delta"] for e in entries)
        if not latest == total == model.balance:
            diffs[member_id].append(
                f"balance: model {model.balance}, ledger latest {latest}, ledger sum {total}"
            )
        raw = table.get(member_id)
        if model.erased:
            if raw is not None:
                diffs[member_id].append("table: erased member still has a state")
        elif raw is None:
            diffs[member_id].append("table: no state")
        else:
            state = decode_state(raw)
            tier = state.tier or reference.rules.tiers[0].name
            if state.balance != model.balance:
                diffs[member_id].append(f"table balance {state.balance} != {model.balance}")
            if tier != reference.tier_name(member_id):
                diffs[member_id].append(
                    f"table tier {tier} != model {reference.tier_name(member_id)}"
                )
            got_coupons = table_coupons(state.coupons.values())
            want_coupons = table_coupons(model.coupons)
            if got_coupons != want_coupons:
                missing = {k: v for k, v in want_coupons.items() if got_coupons.get(k) != v}
                extra = {k: v for k, v in got_coupons.items() if want_coupons.get(k) != v}
                diffs[member_id].append(f"table coupons: model {missing}, engine {extra}")
            if tuple(state.segments) != model.segments:
                diffs[member_id].append(
                    f"table segments {list(state.segments)} != model {list(model.segments)}"
                )
        got_rows = by_cause(engine_segments(outputs, member_id))
        want_rows = by_cause(model_segments(reference, member_id))
        if got_rows != want_rows:
            first = next(
                (i for i, (a, b) in enumerate(zip(got_rows, want_rows, strict=False)) if a != b),
                min(len(got_rows), len(want_rows)),
            )
            diffs[member_id].append(
                f"segment events differ from #{first}: engine {got_rows[first : first + 3]} "
                f"({len(got_rows)} in all), model {want_rows[first : first + 3]} "
                f"({len(want_rows)} in all)"
            )
        got_notices = Counter(
            (n["data"]["code"], n["data"]["value"], n["data"]["expires_on"])
            for n in outputs.win_back_notices.get(member_id, [])
        )
        want_notices = Counter(
            (c.code, c.value, datetime.fromtimestamp(c.expires_s, zone).date().isoformat())
            for c in model.win_back_notices
        )
        if got_notices != want_notices:
            diffs[member_id].append(
                f"win_back notifications {dict(got_notices)} != model {dict(want_notices)}"
            )
        changes = Counter(o.tier_change for o in model.outcomes.values() if o.tier_change)
        if outputs.tier_notices.get(member_id, Counter()) != changes:
            diffs[member_id].append(
                f"tier_changed notifications {dict(outputs.tier_notices.get(member_id, {}))} "
                f"!= model tier changes {dict(changes)}"
            )
        rewards = engine_rewards.get(member_id, {})
        for source, outcome in model.outcomes.items():
            found = rewards.get(source)
            if found is None:
                diffs[member_id].append(
                    f"no reward event for {source}: model {expected_outcome(outcome)}"
                )
                continue
            reward = found
            if engine_outcome(reward) != expected_outcome(outcome):
                diffs[member_id].append(
                    f"reward {source}: engine {engine_outcome(reward)} "
                    f"!= model {expected_outcome(outcome)}"
                )
        for source, reward in rewards.items():
            if source not in model.outcomes:
                diffs[member_id].append(f"unexpected reward {source}: {engine_outcome(reward)}")
    if reference.code_conflicts:
        diffs["(coupon codes)"] += reference.code_conflicts
    return diffs


def describe(member_id: str, reference: Reference, outputs: Outputs, diffs: list[str]) -> str:
    model = reference.members.get(member_id)
    lines = [f"--- {member_id}"] + [f"  DIFF {d}" for d in diffs]
    if model is not None:
        lines.append(" model applied:")
        lines += model.events
        lines.append(" model ledger:")
        lines += [
            f"  {e.source} {e.reason} {e.delta:+d} -> {e.balance_after}" for e in model.ledger
        ]
        lines.append(" model segment changes:")
        lines += [f"  {c.cause} {c.change} {c.segment} at {c.at_s}" for c in model.segment_changes]
        lines.append(" model coupons:")
        lines += [f"  {c}" for c in model.coupons]
    lines.append(" engine ledger:")
    lines += [
        f"  {e['source_event_id']} {e['reason']} {e['delta']:+d} -> {e['balance_after']}"
        for e in outputs.ledger.get(member_id, {}).values()
    ]
    lines.append(" engine segment events:")
    lines += [
        f"  {e['source_event_id']} {e['change']} {e['segment']} at {e['occurred_at']}"
        for e in outputs.segments.get(member_id, [])
    ]
    return "\n".join(lines)


def summary(scenario: Scenario, reference: Reference, runner: Runner) -> dict[str, int]:
    counts: Counter[str] = Counter()
    counts["members"] = len(reference.members)
    sent = Counter(kind for kind, _ in runner.log)
    counts["member events sent"] = sent["member"]
    counts["transactions sent"] = sent["tx"]
    counts["daily jobs"] = sent["daily"]
    for member in reference.members.values():
        counts["refused after erase"] += len(member.refused)
        for _, reason in member.rejected:
            counts[f"dead-lettered {reason}"] += 1
        counts["erased"] += member.erased
        for outcome in member.outcomes.values():
            if outcome.kind == "sale":
                counts["sales"] += 1
                if outcome.enrolled:
                    counts["enrolled by a sale"] += 1
                for code, status in outcome.coupons or []:
                    known = reference.coupon_codes.get(code)
                    kind = "win-back coupon" if known and known[1] == WIN_BACK else "coupon"
                    counts[f"{kind} {status}"] += 1
                for mission in outcome.missions or []:
                    counts[f"mission {mission}"] += 1
            elif outcome.kind == "refund":
                counts["refunds"] += 1
                if outcome.points == 0:
                    counts["refunds reversing nothing"] += 1
            elif outcome.kind == "signup":
                counts["signups"] += 1
                counts["enrolled by a signup"] += outcome.enrolled
            elif outcome.kind == "newsletter_subscribed":
                counts["newsletter subscriptions"] += 1
            elif outcome.kind == "referral" and outcome.referral:
                counts[f"referral {outcome.referral[2]} {outcome.referral[1]}"] += 1
            if outcome.kind == "daily" and outcome.points > 0:
                counts["birthday bonuses"] += 1
            if outcome.kind == "daily" and not outcome.points and not outcome.tier_change:
                counts["daily reward events for segment changes only"] += 1
            if outcome.coupon_issued is not None:
                counts[f"{outcome.coupon_issued.source} coupons issued ({outcome.kind})"] += 1
            if outcome.segment_changes:
                counts[f"segment changes at {outcome.kind}"] += outcome.segment_changes
            if outcome.tier_change:
                old, new = outcome.tier_change
                direction = (
                    "up"
                    if reference.rules.tier_index(new) > reference.rules.tier_index(old)
                    else "down"
                )
                counts[f"tier {direction} {old}->{new} ({outcome.kind})"] += 1
        for change in member.segment_changes:
            counts[f"segment {change.segment} {change.change}"] += 1
        counts["win_back notifications"] += len(member.win_back_notices)
        counts[f"final tier {reference.tier_name(member.member_id)}"] += 1
        counts["duplicates ignored"] += sum(1 for e in member.events if "duplicate" in e)
    for item in scenario.items:
        if item.kind == "refund" and item.liters_cl < item.original.liters_cl:  # type: ignore
            counts["partial refund requests"] += 1
    return dict(sorted(counts.items()))


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close()


def test_sixty_days_for_500_members_match_an_independent_reference(
    kafka_bootstrap: str, tmp_path: Path, closing: list[Any]
) -> None:
    started = time.monotonic()
    scenario = build_scenario()
    settings = isolated_settings(kafka_bootstrap, tmp_path, partitions=PARTITIONS)
    ensure_topics(settings)
    outputs = Outputs(settings)
    closing.append(outputs)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    runner = Runner(settings, worker, outputs)
    closing.append(runner)
    try:
        worker.wait_ready()
        runner.run(scenario)
    finally:
        worker.stop()
    sent_s = time.monotonic() - started
    outputs.drain()
    table = read_table(settings)
    reference = replay(runner.log, outputs, table)
    diffs = compare(reference, outputs, table)
    without_referrals = compare(replay(runner.log, outputs, table, referrals=False), outputs, table)

    counts = summary(scenario, reference, runner)
    print(f"\nscenario sent and processed in {sent_s:.1f}s; {outputs.records} output records")
    for name, count in counts.items():
        print(f"  {name}: {count}")
    for member, note in scenario.notes.items():
        print(f"  designed {member}: {note}")
    if runner.problems:
        print("problems while sending:\n  " + "\n  ".join(runner.problems[:20]))
    if outputs.changed:
        print("records re-emitted with other bytes:\n  " + "\n  ".join(outputs.changed[:5]))
    if diffs:
        only_referral = sorted(set(diffs) - set(without_referrals))
        print(
            f"\n{len(diffs)} members differ from the model; {len(only_referral)} of them match "
            f"the model without referrals (referral mechanic): {only_referral[:20]}"
        )
        others = [m for m in diffs if m not in only_referral] + only_referral
        for member in others[:6]:
            print(describe(member, reference, outputs, diffs[member]))
    assert not diffs, f"{len(diffs)} members differ from the reference model (see output)"
    assert not outputs.changed, f"records re-emitted with other bytes: {outputs.changed[:3]}"
    assert not runner.problems
    assert rule_outcomes(outputs) == EXPECTED_RULE_OUTCOMES


MISSION = ["three_fills_7d"]
EXPECTED_RULE_OUTCOMES = {
    # (missions, tier used, tier change) of each sale, in the order planned.
    "mr1": [(None, "bronze", None)] * 3 + [(MISSION, "bronze", None)],
    "mr2": [(None, "bronze", None)] * 2
    + [(MISSION, "bronze", None)]
    + [(None, "bronze", None)] * 3
    + [(MISSION, "bronze", None)],
    "mr3": [(None, "bronze", None)] * 3 + [(MISSION, "bronze", None)],
    "mr4": [
        (None, "bronze", None),
        (None, "bronze", ("bronze", "silver")),
        (MISSION, "silver", None),  # days 29, 30 and 33: the late sale counts for a later one
    ],
    "mr5": [(None, "bronze", ("bronze", "silver")), (None, "silver", None)],
}
"""The rules of issue 19 on the engine's own reward events (the model agrees with them)."""


def rule_outcomes(outputs: Outputs) -> dict[str, list[tuple[Any, ...]]]:
    found: dict[str, list[tuple[Any, ...]]] = {}
    for member, kinds in EXPECTED_RULE_OUTCOMES.items():
        rows = []
        for index in range(1, len(kinds) + 1):
            reward = outputs.by_source.get((member, "sale", f"pos-{member}-{index:03d}"), {})
            change = reward.get("tier_change")
            rows.append(
                (
                    reward.get("missions"),
                    reward.get("tier"),
                    (change["from"], change["to"]) if change else None,
                )
            )
        found[member] = rows
    return found
