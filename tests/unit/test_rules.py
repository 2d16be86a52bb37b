from decimal import Decimal

import pytest

from loyalty.core.program import FuelPointsRule
from loyalty.core.rules import fuel_points, reversal_points

DEFAULT = FuelPointsRule(
    points_per_liter=Decimal(1), volume_threshold_liters=Decimal(15), volume_multiplier=Decimal(2)
)


@pytest.mark.parametrize(
    ("liters", "base", "points", "multiplied"),
    [
        ("0.5", 0, 0, False),
        ("10", 10, 10, False),
        ("14.99", 14, 14, False),
        ("15", 15, 15, False),  # the multiplier applies strictly above 15 litres
        ("15.01", 15, 30, True),
        ("20.5", 20, 41, True),
        ("4.35", 4, 4, False),
        ("1000", 1000, 2000, True),
    ],
)
def test_fuel_points_floor_of_liters_times_multiplier(liters, base, points, multiplied):
    result = fuel_points(Decimal(liters), DEFAULT)
    assert result.base_points == base
    assert result.points == points
    assert bool(result.multipliers) == multiplied


def test_decimal_liters_do_not_lose_points_to_binary_rounding():
    # 4.35 * 100 is 434.99999999999994 in binary floating point.
    rule = FuelPointsRule(Decimal(100), Decimal(1000), Decimal(1))
    assert fuel_points(Decimal("4.35"), rule).points == 435


def test_full_refund_reverses_everything_credited():
    assert reversal_points(141, Decimal("20.5"), Decimal(0), Decimal("20.5")) == (
        141,
        Decimal("20.5"),
    )


def test_partial_refunds_add_up_to_one_full_refund():
    credited, liters = 41, Decimal("20.5")
    first = reversal_points(credited, liters, Decimal(0), Decimal("7"))
    second = reversal_points(credited, liters, Decimal("7"), Decimal("13.5"))
    assert first == (14, Decimal("7"))  # floor(41 * 7 / 20.5) = 14
    assert first[0] + second[0] == credited


def test_refund_is_capped_at_unrefunded_liters():
    assert reversal_points(40, Decimal(20), Decimal(15), Decimal(10)) == (10, Decimal(5))
    assert reversal_points(40, Decimal(20), Decimal(20), Decimal(1)) == (0, Decimal(0))
