"""Pure earning rules of the loyalty program: plain values in, plain values out."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal

from loyalty.core.program import FuelPointsRule, Mission, Tier

VOLUME_MULTIPLIER = "volume"
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class FuelPoints:
    base_points: int
    """floor(litres x points per litre)."""
    multipliers: tuple[tuple[str, Decimal], ...]
    """(name, factor) of every multiplier that applied."""
    points: int
    """floor(litres x points per litre x every multiplier)."""


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def fuel_points(liters: Decimal, rule: FuelPointsRule, tier: Tier | None = None) -> FuelPoints:
    """Points for a fill; the volume multiplier applies strictly above the threshold, the
    tier multiplier (the tier held before the sale) to every fill."""
    multipliers: tuple[tuple[str, Decimal], ...] = ()
    if liters > rule.volume_threshold_liters:
        multipliers = ((VOLUME_MULTIPLIER, rule.volume_multiplier),)
    if tier is not None and tier.multiplier != 1:
        multipliers += ((f"tier:{tier.name}", tier.multiplier),)
    base = liters * rule.points_per_liter
    total = base
    for _, factor in multipliers:
        total *= factor
    return FuelPoints(base_points=_floor(base), multipliers=multipliers, points=_floor(total))


def reversal_points(
    credited: int, sale_liters: Decimal, already_refunded: Decimal, refund_liters: Decimal
) -> tuple[int, Decimal]:
    """Points a refund takes back, and the litres it refunds.

    The refund is capped at the sale's unrefunded litres. Partial refunds reverse in
    proportion, floored on the cumulative total so that refunding a sale in parts takes
    back exactly what one full refund would.
    """
    refunded = min(refund_liters, sale_liters - already_refunded)
    if refunded <= 0:
        return 0, Decimal(0)
    before = _floor(credited * already_refunded / sale_liters)
    after = _floor(credited * (already_refunded + refunded) / sale_liters)
    return after - before, refunded


def tier_for(points: int, tiers: tuple[Tier, ...]) -> Tier:
    """The highest tier whose threshold ``points`` reaches (tiers ascend from 0)."""
    reached = tiers[0]
    for tier in tiers:
        if points >= tier.min_points:
            reached = tier
    return reached


def tier_named(name: str | None, tiers: tuple[Tier, ...]) -> Tier:
    """The tier called ``name``; the lowest for None or a tier the program no longer has."""
    return next((tier for tier in tiers if tier.name == name), tiers[0])


def earned_in_window(earned_by_day: dict[int, int], day: int, window_days: int) -> int:
    """Points earned in the ``window_days`` calendar days ending with ``day``, that day
    included (day ordinals in the program's time zone): ``day - window_days + 1`` to ``day``."""
    first = day - window_days + 1
    return sum(points for d, points in earned_by_day.items() if first <= d <= day)


def tier_as_of_day(day: int, earned_by_day: dict[int, int], last_daily_day: int | None) -> int:
    """The day the tier is judged as of, for a credit (or a daily job) of ``day``: the
    latest of ``day``, the member's latest day with a credit, and the day of their last
    daily job. A late credit is judged as of the member's latest day on record, so the tier
    never depends on the order in which a member's credits arrive: the window never moves
    back in time (as for segments)."""
    return max(day, max(earned_by_day, default=day), last_daily_day or day)


def mission_completed(
    mission: Mission,
    sales: list[tuple[int, Decimal]],
    now_s: int,
    last_award_s: int | None,
    current_liters: Decimal | None = None,
) -> bool:
    """Whether the sale at ``now_s`` completes ``mission``.

    ``sales`` are (event time in whole epoch seconds, litres net of the refunds applied so
    far) of the member's remembered sales, this one included. The rule, in exact time (not
    calendar days): the sale itself and at least ``mission.sales - 1`` other sales count, a
    sale counting when its net litres are above 0 and at least ``min_liters`` and its time
    ``t`` is in ``(now_s - window_days x 24 h, now_s]`` (a sale dated after ``now_s``, which
    arrived before a late one, does not count for it); and none when the mission was last
    completed at ``last_award_s`` with ``now_s < last_award_s + cooldown_days x 24 h``.
    ``current_liters``: the completing sale's net litres, which must count itself (None:
    not checked, for callers that only count).
    """
    if current_liters is not None and not _counts(current_liters, mission):
        return False
    if last_award_s is not None and now_s - last_award_s < mission.cooldown_days * _DAY_S:
        return False
    start = now_s - mission.window_days * _DAY_S
    qualifying = sum(
        1
        for occurred_s, liters in sales
        if start < occurred_s <= now_s and _counts(liters, mission)
    )
    return qualifying >= mission.sales


def _counts(net_liters: Decimal, mission: Mission) -> bool:
    """Whether a sale of ``net_liters`` (after refunds) counts towards ``mission``: a sale
    refunded in full never does."""
    return net_liters > 0 and net_liters >= mission.min_liters


def is_birthday(birth_date: date, day: date) -> bool:
    """Whether ``day`` is the birthday; 29 February counts on 28 February in other years."""
    if (birth_date.month, birth_date.day) == (2, 29) and not calendar.isleap(day.year):
        return (day.month, day.day) == (2, 28)
    return (birth_date.month, birth_date.day) == (day.month, day.day)
