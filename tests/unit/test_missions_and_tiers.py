"""The open rules of missions and tiers (issue 19), each pinned on the pure rules.

Each test names the sentence of README's program reference (and program/default.toml) it
pins. Missions: exact time, the window ``(t - window_days x 24 h, t]`` ending at the sale,
the cooldown from the last completion (closed at exactly ``cooldown_days x 24 h``), no sale
dated after a late sale counting for it, litres net of refunds (a sale refunded in full never
counts), the completing sale itself at least ``min_liters``. Tiers: ``window_days`` calendar
days ending with the as-of day, that day included; a late credit judged as of the member's
latest day on record; a late sale's fuel points at the tier held when it is applied.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from loyalty.core.accounts import apply_daily, apply_transaction
from loyalty.core.program import Mission
from loyalty.core.rules import earned_in_window, mission_completed, tier_as_of_day
from loyalty.schemas.state import MemberState
from tests.unit import builders
from tests.unit.builders import NOW_MS, PROGRAM, run

DAY_S = 86_400
ZONE = ZoneInfo(PROGRAM.timezone)
THREE_IN_7 = Mission("m", sales=3, window_days=7, min_liters=Decimal(0), bonus_points=150,
                     cooldown_days=30)  # fmt: skip
AT_LEAST_20 = replace(THREE_IN_7, min_liters=Decimal(20))
T = 1_774_000_000  # an instant, whole seconds


def litres(value: str) -> Decimal:
    return Decimal(value)


# ---- missions: the pure rule ---------------------------------------------------------


def test_mission_window_is_exact_time_open_at_its_start_and_closed_at_the_sale():
    # The third sale at T: a first one exactly 7 x 24 h before is outside, one second
    # later is inside; a sale at the same second as T counts.
    outside = [(T - 7 * DAY_S, litres("10")), (T - DAY_S, litres("10")), (T, litres("10"))]
    inside = [(T - 7 * DAY_S + 1, litres("10")), (T - DAY_S, litres("10")), (T, litres("10"))]
    same_second = [(T - DAY_S, litres("10")), (T, litres("10")), (T, litres("10"))]
    assert not mission_completed(THREE_IN_7, outside, T, None)
    assert mission_completed(THREE_IN_7, inside, T, None)
    assert mission_completed(THREE_IN_7, same_second, T, None)


def test_mission_window_is_24_hour_days_across_the_switch_to_summer_time():
    # 25 March 11:00 +01:00 to 1 April 11:30 +02:00: seven calendar days and 30 minutes on
    # the wall clock, but 6 days 23 h 30 min of exact time: inside the 7 days.
    first = datetime(2026, 3, 25, 11, tzinfo=ZONE)
    third = datetime(2026, 4, 1, 11, 30, tzinfo=ZONE)
    now = int(third.timestamp())
    sales = [
        (int(first.timestamp()), litres("12")),
        (int((first + timedelta(days=3)).timestamp()), litres("12")),
        (now, litres("12")),
    ]
    assert now - sales[0][0] == 7 * DAY_S - 1800
    assert mission_completed(THREE_IN_7, sales, now, None)


def test_mission_cooldown_ends_exactly_cooldown_days_x_24_hours_after_the_last_completion():
    def sales(now: int) -> list[tuple[int, Decimal]]:
        return [(now - 2 * DAY_S, litres("10")), (now - DAY_S, litres("10")), (now, litres("10"))]

    last = T
    just_before = last + 30 * DAY_S - 1
    at_the_boundary = last + 30 * DAY_S
    assert not mission_completed(THREE_IN_7, sales(just_before), just_before, last)
    assert mission_completed(THREE_IN_7, sales(at_the_boundary), at_the_boundary, last)
    # A late sale dated before the last completion never completes the mission again.
    late = last - 40 * DAY_S
    assert not mission_completed(THREE_IN_7, sales(late), late, last)


def test_a_mission_counts_sales_by_their_litres_net_of_refunds():
    # Net litres after refunds: 0 (refunded in full) never counts, even with min_liters 0.
    refunded = [(T - 2 * DAY_S, litres("0")), (T - DAY_S, litres("10")), (T, litres("10"))]
    assert not mission_completed(THREE_IN_7, refunded, T, None)
    partly = [(T - 2 * DAY_S, litres("0.5")), (T - DAY_S, litres("10")), (T, litres("10"))]
    assert mission_completed(THREE_IN_7, partly, T, None)
    # With a minimum, a sale partly refunded below it no longer counts.
    below = [(T - 2 * DAY_S, litres("19.999")), (T - DAY_S, litres("25")), (T, litres("25"))]
    assert not mission_completed(AT_LEAST_20, below, T, None, litres("25"))
    assert mission_completed(
        AT_LEAST_20, [(T - 2 * DAY_S, litres("20")), *below[1:]], T, None, litres("25")
    )


def test_the_completing_sale_itself_must_reach_min_liters():
    # Three earlier sales of 25 L in the window (a cooldown kept them from completing it);
    # a 10 L sale does not complete it on their strength, a 20 L one does.
    earlier = [(T - 3 * DAY_S + n * 3600, litres("25")) for n in range(3)]
    assert not mission_completed(AT_LEAST_20, [*earlier, (T, litres("10"))], T, None, litres("10"))
    assert mission_completed(AT_LEAST_20, [*earlier, (T, litres("20"))], T, None, litres("20"))


# ---- missions: through the account transition ----------------------------------------

T0 = datetime.fromisoformat("2026-03-02T09:00:00+01:00")


def sale(tx_id: str, liters: str, days: float) -> builders.Transaction:
    return builders.sale(tx_id, liters, T0 + timedelta(days=days))


def refund(tx_id: str, original: str, liters: str, days: float) -> builders.Transaction:
    return builders.sale(
        tx_id, liters, T0 + timedelta(days=days), type="refund", original_transaction_id=original
    )


def missions(outcome: builders.Outcome) -> list[str] | None:
    return outcome.applied.details.get("missions")


def test_a_late_sale_does_not_count_the_sales_dated_after_it():
    # Sales of days 2 and 3 arrive first; then a sale dated day 0: its window (day -7, day 0]
    # holds only itself, so it completes nothing (in event time three sales lie within 7
    # days, but the window ends at the late sale).
    state, outcomes = run(MemberState(), sale("b", "10", 2), sale("c", "10", 3), sale("a", "10", 0))
    assert [missions(o) for o in outcomes] == [None, None, None]
    # The next sale, on day 4, counts all three in (day -3, day 4].
    state, (next_sale,) = run(state, sale("d", "10", 4))
    assert missions(next_sale) == ["three_fills_7d"]


def test_a_sale_refunded_in_full_no_longer_counts_towards_a_mission():
    state, outcomes = run(
        MemberState(),
        sale("a", "10", 0),
        sale("b", "10", 1),
        refund("r", "a", "10", 1.5),
        sale("c", "10", 2),  # a refunded in full: 2 of 3
    )
    assert missions(outcomes[-1]) is None
    _, (fourth,) = run(state, sale("d", "10", 3))
    assert missions(fourth) == ["three_fills_7d"]


def test_a_sale_partly_refunded_still_counts_with_the_default_min_liters_of_0():
    _, outcomes = run(
        MemberState(),
        sale("a", "10", 0),
        sale("b", "10", 1),
        refund("r", "a", "9.999", 1.5),
        sale("c", "10", 2),
    )
    assert missions(outcomes[-1]) == ["three_fills_7d"]


def test_a_small_sale_completes_nothing_when_the_mission_has_a_minimum():
    # Completed on day 2; three 25 L sales inside the 30-day cooldown (days 29 to 31); once
    # it is over, a 10 L sale on day 33 does not complete it on their strength, a 20 L one
    # on day 34 does.
    program = replace(PROGRAM, missions=(replace(PROGRAM.missions[0], min_liters=Decimal(20)),))
    state = MemberState()
    completed = []
    for tx_id, liters, days in (
        ("a", "25", 0),
        ("b", "25", 1),
        ("c", "25", 2),
        ("d", "25", 29),
        ("e", "25", 30),
        ("f", "25", 31),
        ("g", "10", 33),
        ("h", "20", 34),
    ):
        state, outcome = apply_transaction(state, sale(tx_id, liters, days), program, NOW_MS)
        completed.append(missions(outcome))
    mission = ["three_fills_7d"]
    assert completed == [None, None, mission, None, None, None, None, mission]


# ---- tiers ---------------------------------------------------------------------------


def test_the_tier_window_is_calendar_days_ending_with_the_as_of_day_included():
    day = date(2025, 1, 10).toordinal()
    earned = {day: 1000}
    assert earned_in_window(earned, day + 364, 365) == 1000  # 365 days: day .. day + 364
    assert earned_in_window(earned, day + 365, 365) == 0
    assert earned_in_window(earned, day - 1, 365) == 0  # a later credit never counts


def test_a_credit_is_judged_as_of_the_latest_day_on_record():
    day = 739_000
    assert tier_as_of_day(day, {day - 5: 10}, None) == day
    assert tier_as_of_day(day, {day + 3: 10}, None) == day + 3  # a later credit
    assert tier_as_of_day(day, {day - 5: 10}, day + 7) == day + 7  # a later daily job


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZONE)


def test_a_late_credit_upgrades_when_the_window_of_the_latest_day_crosses_the_threshold():
    # 11 January: 225 L -> 450 + 100 welcome = 550; then a late sale dated 10 January of
    # 225 L -> 450: 1,000 earned in the window ending 11 January: silver on the late sale
    # (judged as of 10 January only, it would count 450 and the member would stay bronze).
    state, outcomes = run(
        MemberState(),
        builders.sale("b", "225", at(date(2026, 1, 11))),
        builders.sale("a", "225", at(date(2026, 1, 10))),
    )
    assert outcomes[1].applied.details["tier_change"] == ["bronze", "silver"]
    assert state.tier == "silver"


def test_a_late_credit_is_not_judged_on_a_window_that_has_moved_past_it():
    # 900 earned on 10 January 2025 and 10 on 5 January 2026; the daily job of 11 January
    # 2026 has run; then a sale dated 9 January 2026 arrives (+100). As of its own day the
    # window (10 January 2025 to 9 January 2026) would hold 1,010: silver. As of the latest
    # day on record, the job's 11 January 2026, 10 January 2025 is out: 110, bronze.
    state, _ = run(
        MemberState(),
        builders.sale("old", "400", at(date(2025, 1, 10))),  # 800 + 100 welcome
        builders.sale("x", "10", at(date(2026, 1, 5))),  # 10
    )
    state, _ = apply_daily(state, date(2026, 1, 11), PROGRAM, NOW_MS, "m-1")
    state, (late,) = run(state, builders.sale("late", "50", at(date(2026, 1, 9))))  # 100
    assert "tier_change" not in late.applied.details
    assert state.tier == "bronze"


def test_a_late_sale_earns_at_the_tier_held_when_it_is_applied():
    # Silver since 20 January; a sale dated 5 January arrives after: x1.25 (and x2 volume).
    state, _ = run(MemberState(), builders.sale("a", "450", at(date(2026, 1, 20))))
    assert state.tier == "silver"
    state, (late,) = run(state, builders.sale("late", "20", at(date(2026, 1, 5))))
    assert late.applied.details["tier"] == "silver"
    assert late.applied.entries[0] == ("fuel_points", 50)  # floor(20 x 2 x 1.25)


@pytest.mark.parametrize("job_day", [date(2026, 1, 9), date(2026, 1, 10)])
def test_the_daily_job_downgrades_on_the_window_ending_with_its_day(job_day):
    state, _ = run(MemberState(), builders.sale("a", "450", at(date(2025, 1, 10))))
    state, outcome = apply_daily(state, job_day, PROGRAM, NOW_MS, "m-1")
    expected = "silver" if job_day == date(2026, 1, 9) else "bronze"  # day 365 is out
    assert state.tier == expected
