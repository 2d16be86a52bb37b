"""Pure earning rules of the loyalty program: plain values in, plain values out."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from streams.program import FuelPointsRule

VOLUME_MULTIPLIER = "volume"


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


def fuel_points(liters: Decimal, rule: FuelPointsRule) -> FuelPoints:
    """Points for a fill; the volume multiplier applies strictly above the threshold."""
    multipliers: tuple[tuple[str, Decimal], ...] = ()
    if liters > rule.volume_threshold_liters:
        multipliers = ((VOLUME_MULTIPLIER, rule.volume_multiplier),)
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
