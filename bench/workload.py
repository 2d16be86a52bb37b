"""The benchmark's workload: member events and POS transactions with a realistic mix. Pure.

Mix (shares of all transactions, defaults of :class:`Mix`):

- sales of 5-70 litres (most above the 15-litre threshold of the volume multiplier);
- ~3% refunds of an earlier sale of the same member, each sale refunded at most once;
- ~5% of sales present a coupon code: some the member's own newsletter coupon (redeemed
  once, then presented again: ``coupon_used``), most invalid (another member's code:
  ``not_owner``; a made-up code: ``unknown_coupon``);
- heavy buyers (1% of members make 20% of the sales) that cross the silver and gold tier
  thresholds and complete missions.

Coupons can only be issued by the engine (a ``newsletter_subscribed`` member event), so the
real codes are read from its reward events and handed to :class:`TransactionGenerator`.
Every event is valid: each input yields exactly one reward event and no dead letter.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loyalty.demo.pos import FUEL_TYPES, PRICE_PER_LITER

VOLUME_THRESHOLD_LITERS = 15.0
LOCALES = ("es", "en", "it", "pl")
INVALID_CODES = ("SAVE10", "FUEL-2024", "WELCOME", "X7Y8Z9", "PROMO5")


@dataclass(frozen=True)
class Mix:
    refund_share: float = 0.03
    coupon_share: float = 0.05
    """Share of sales that present a coupon code."""
    own_coupon_share: float = 0.3
    """Among coupon sales: the member presents their own unused newsletter coupon."""
    reused_coupon_share: float = 0.1
    """Among coupon sales: a member presents their already redeemed coupon again."""
    foreign_coupon_share: float = 0.2
    """Among coupon sales: another member's real code (the rest: made-up codes)."""
    newsletter_share: float = 0.05
    """Share of members that subscribe to the newsletter (and get a coupon)."""
    heavy_member_share: float = 0.01
    heavy_sale_share: float = 0.20
    min_liters: float = 5.0
    max_liters: float = 70.0
    stations: int = 400


def member_ids(count: int) -> list[str]:
    return [f"member-{index:07d}" for index in range(count)]


def newsletter_members(members: list[str], share: float) -> list[str]:
    """Every k-th member, ``share`` of them (at least one)."""
    step = max(1, round(1 / share)) if share > 0 else len(members) + 1
    return members[::step] or members[:1]


def member_events(members: list[str], occurred_at: datetime, run_id: str) -> list[dict[str, Any]]:
    """A signup with marketing consent, then a newsletter subscription, for each member."""
    stamp = occurred_at.isoformat(timespec="milliseconds")
    events: list[dict[str, Any]] = []
    for index, member_id in enumerate(members):
        common = {"member_id": member_id, "occurred_at": stamp}
        events.append(
            {
                **common,
                "event_id": f"bench-{run_id}-signup-{member_id}",
                "type": "signup",
                "locale": LOCALES[index % len(LOCALES)],
                "consents": {"marketing": True},
            }
        )
        events.append(
            {
                **common,
                "event_id": f"bench-{run_id}-newsletter-{member_id}",
                "type": "newsletter_subscribed",
            }
        )
    return events


class TransactionGenerator:
    """Endless, reproducible transactions over ``members``; ``coupons`` maps a member to the
    code of the newsletter coupon the engine issued to them."""

    def __init__(
        self,
        members: list[str],
        coupons: dict[str, str],
        run_id: str,
        seed: int = 7,
        mix: Mix | None = None,
    ) -> None:
        self.mix = mix or Mix()
        self.rng = random.Random(seed)
        self.members = members
        heavy_count = max(1, round(len(members) * self.mix.heavy_member_share))
        self.heavy = self.rng.sample(members, min(heavy_count, len(members)))
        self.unused_coupons = dict(sorted(coupons.items()))
        self.used_coupons: list[tuple[str, str]] = []
        self.all_codes = sorted(coupons.values())
        self.refundable: list[tuple[str, str, float]] = []
        """(member_id, transaction_id, liters) of sales not refunded yet."""
        self.run_id = run_id
        self.sequence = 0
        self.counts: Counter[str] = Counter()

    def next(self, occurred_at: datetime) -> dict[str, Any]:
        """The next transaction, happening at ``occurred_at`` (must not go backwards)."""
        self.sequence += 1
        transaction_id = f"bench-{self.run_id}-{self.sequence:09d}"
        stamp = occurred_at.isoformat(timespec="milliseconds")
        if self.refundable and self.rng.random() < self.mix.refund_share:
            return self._refund(transaction_id, stamp)
        return self._sale(transaction_id, stamp)

    def _sale(self, transaction_id: str, stamp: str) -> dict[str, Any]:
        rng = self.rng
        member_id = self._buyer()
        codes: list[str] = []
        if rng.random() < self.mix.coupon_share:
            member_id, code = self._coupon(member_id)
            codes.append(code)
        fuel = rng.choice(FUEL_TYPES)
        liters = round(rng.uniform(self.mix.min_liters, self.mix.max_liters), 2)
        self.refundable.append((member_id, transaction_id, liters))
        self.counts["sale"] += 1
        if liters > VOLUME_THRESHOLD_LITERS:
            self.counts["over_threshold"] += 1
        sale: dict[str, Any] = {
            "transaction_id": transaction_id,
            "member_id": member_id,
            "station_id": f"station-{rng.randrange(self.mix.stations):04d}",
            "occurred_at": stamp,
            "type": "sale",
            "fuel_type": fuel,
            "liters": liters,
            "amount": round(liters * PRICE_PER_LITER[fuel], 2),
            "currency": "EUR",
        }
        if codes:
            sale["coupon_codes"] = codes
        return sale

    def _buyer(self) -> str:
        if self.rng.random() < self.mix.heavy_sale_share:
            self.counts["heavy"] += 1
            return self.rng.choice(self.heavy)
        return self.rng.choice(self.members)

    def _coupon(self, member_id: str) -> tuple[str, str]:
        """(buyer, presented code) of a sale that presents a coupon."""
        mix, roll = self.mix, self.rng.random()
        if roll < mix.own_coupon_share and self.unused_coupons:
            owner = next(iter(self.unused_coupons))
            code = self.unused_coupons.pop(owner)
            self.used_coupons.append((owner, code))
            self.counts["coupon_own"] += 1
            return owner, code
        roll -= mix.own_coupon_share
        if roll < mix.reused_coupon_share and self.used_coupons:
            self.counts["coupon_reused"] += 1
            return self.rng.choice(self.used_coupons)
        roll -= mix.reused_coupon_share
        if roll < mix.foreign_coupon_share and self.all_codes:
            code = self.rng.choice(self.all_codes)
            if self.unused_coupons.get(member_id) != code:
                self.counts["coupon_foreign"] += 1
                return member_id, code
        self.counts["coupon_made_up"] += 1
        return member_id, self.rng.choice(INVALID_CODES)

    def _refund(self, transaction_id: str, stamp: str) -> dict[str, Any]:
        rng = self.rng
        index = rng.randrange(len(self.refundable))
        # Swap-remove: O(1), and each sale is refunded at most once.
        self.refundable[index], self.refundable[-1] = self.refundable[-1], self.refundable[index]
        member_id, original_id, sale_liters = self.refundable.pop()
        liters = (
            sale_liters if rng.random() < 0.7 else round(sale_liters * rng.uniform(0.2, 0.9), 2)
        )
        liters = max(liters, 0.01)
        fuel = rng.choice(FUEL_TYPES)
        self.counts["refund"] += 1
        return {
            "transaction_id": transaction_id,
            "member_id": member_id,
            "station_id": f"station-{rng.randrange(self.mix.stations):04d}",
            "occurred_at": stamp,
            "type": "refund",
            "fuel_type": fuel,
            "liters": liters,
            "amount": round(liters * PRICE_PER_LITER[fuel], 2),
            "currency": "EUR",
            "original_transaction_id": original_id,
        }
