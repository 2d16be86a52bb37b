"""Refunds, the refund window and staleness, coupon validity: the pure rules (issue 19).

Each test pins one sentence of the program reference (README, "The program file", and the
comments of program/default.toml).
"""

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from loyalty.core import coupons as wallet
from loyalty.core import lots, saga
from loyalty.core.accounts import (
    RejectedTransaction,
    apply_daily,
    apply_member_event,
    apply_redemption_step,
    apply_transaction,
    day_of,
)
from loyalty.core.program import CouponOffer
from loyalty.core.rules import reversal_points
from loyalty.schemas.events import REFUND, Transaction
from loyalty.schemas.state import MemberState
from tests.unit.builders import MEMBER, NOW_MS, PROGRAM, hold, member_event, sale

DAY_S = 86_400
T0 = datetime.fromisoformat("2026-01-05T10:00:00+01:00")


def at(days: float = 0, seconds: int = 0) -> datetime:
    return T0 + timedelta(days=days, seconds=seconds)


def refund(tx_id: str, of: str, liters: str, when: datetime) -> Transaction:
    return sale(tx_id, liters, when, type=REFUND, original_transaction_id=of)


def applied(state: MemberState, *events: Transaction, program=PROGRAM) -> MemberState:
    for event in events:
        state, _ = apply_transaction(state, event, program, NOW_MS)
    return state


def rejection(state: MemberState, event: Transaction, program=PROGRAM) -> str:
    with pytest.raises(RejectedTransaction) as error:
        apply_transaction(state, event, program, NOW_MS)
    return error.value.reason


# ---- the refund window -------------------------------------------------------------------


def test_a_refund_105_days_after_its_sale_is_refused_and_changes_nothing():
    """Issue 19, defect 1: a 20 L sale of 2026-01-05 (140 points), refunded on 2026-04-20."""
    state = applied(MemberState(), sale("S", "20", T0))
    assert state.balance == 140
    late = refund("R", "S", "20", datetime.fromisoformat("2026-04-20T10:00:00+02:00"))
    assert rejection(state, late) == "unknown_original_transaction"


def test_the_refund_window_is_exact_time_closed_at_window_days_times_24_hours():
    """``window_days`` x 86,400 s of event time, edge included; across the switch to summer
    time (2026-03-29) that is 11:00 on the wall clock of the 90th day, not the calendar day."""
    window_s = PROGRAM.refund_window_days * DAY_S
    state = applied(MemberState(), sale("S", "20", T0))
    edge = T0 + timedelta(seconds=window_s)
    assert edge.astimezone(ZoneInfo(PROGRAM.timezone)).isoformat() == "2026-04-05T11:00:00+02:00"
    on_edge = applied(state, refund("R", "S", "20", edge))
    assert on_edge.balance == 0
    over = refund("R", "S", "20", edge + timedelta(seconds=1))
    assert rejection(state, over) == "unknown_original_transaction"


def test_a_late_refund_of_a_sale_the_newest_transaction_left_out_of_the_window_is_refused():
    """The window runs from the sale to the later of the refund and the member's newest
    transaction: a refund dated 50 days after its sale, arriving after a sale 95 days after
    it, finds the sale forgotten."""
    state = applied(MemberState(), sale("S", "20", at(0)), sale("T", "5", at(95)))
    assert rejection(state, refund("R", "S", "20", at(50))) == "unknown_original_transaction"
    # Without the newer sale the same refund is applied.
    assert (
        applied(MemberState(), sale("S", "20", at(0)), refund("R", "S", "20", at(50))).balance == 0
    )


def test_staleness_is_exact_time_from_the_newest_transaction_and_daily_jobs_do_not_count():
    """A transaction dated more than window_days x 24 h before the member's newest
    transaction is stale; daily jobs (and member events) are not transactions."""
    state = applied(MemberState(), sale("S", "20", at(0)))
    for offset in range(1, 200, 10):  # the daily jobs of 200 days, expiry and all
        state, _ = apply_daily(state, (T0 + timedelta(days=offset)).date(), PROGRAM, NOW_MS, MEMBER)
    update = member_event("p", "profile_updated", at(150), locale="es")
    state, _ = apply_member_event(state, update, PROGRAM, NOW_MS)
    window = PROGRAM.refund_window_days
    assert applied(state, sale("L", "5", at(-window))).applied.keys() >= {"L"}
    assert rejection(state, sale("L", "5", at(-window, seconds=-1))) == "stale_transaction"


# ---- what a refund takes back -----------------------------------------------------------


def test_partial_refunds_take_the_running_share_floored_on_the_cumulative_total():
    """Each refund takes floor(credited x litres refunded so far / sale litres) less what
    the sale's earlier refunds took: three thirds of 110 points take 36, 37 and 37."""
    assert reversal_points(110, Decimal(3), Decimal(0), Decimal(1)) == (36, Decimal(1))
    assert reversal_points(110, Decimal(3), Decimal(1), Decimal(1)) == (37, Decimal(1))
    assert reversal_points(110, Decimal(3), Decimal(2), Decimal(5)) == (37, Decimal(1))
    state = applied(MemberState(), sale("S", "3", T0))  # 3 fuel + 100 welcome = 103
    state = applied(
        state,
        refund("R1", "S", "1", at(1)),
        refund("R2", "S", "1", at(2)),
        refund("R3", "S", "1", at(3)),
    )
    deltas = [state.applied[r].entries for r in ("R1", "R2", "R3")]
    assert deltas == [
        (("refund_reversal", -34),),
        (("refund_reversal", -34),),
        (("refund_reversal", -35),),
    ]
    assert state.balance == 0


def test_a_refund_takes_back_its_share_of_the_bonuses_credited_with_the_sale():
    """Welcome, coupon and mission bonuses of the sale are reversed in proportion; the
    coupon stays used, the welcome bonus is not given again, the mission award stands."""
    state = applied(MemberState(), sale("A", "10", at(0)), sale("B", "10", at(1)))
    state = applied(state, sale("C", "20", at(2)))  # 40 fuel + 150 mission
    assert state.applied["C"].entries == (("fuel_points", 40), ("mission_bonus", 150))
    state = applied(state, refund("R", "C", "10", at(3)))
    assert state.applied["R"].entries == (("refund_reversal", -95),)
    state = applied(state, refund("RA", "A", "10", at(3)))  # 10 fuel + 100 welcome
    assert state.applied["RA"].entries == (("refund_reversal", -110),)
    state = applied(state, sale("D", "10", at(4)))
    assert state.applied["D"].entries == (("fuel_points", 10),)
    assert "three_fills_7d" in state.mission_awarded_s


def test_a_refund_removes_its_points_from_the_lot_of_its_sale_first():
    """The points a refund takes back come out of the sale's day lot first (then the
    oldest lots), so the expiry of the member's other points is unchanged."""
    state = applied(MemberState(), sale("OLD", "10", at(0)), sale("S", "20", at(10)))
    old_day, sale_day = (
        day_of(int(at(0).timestamp()), PROGRAM),
        day_of(int(at(10).timestamp()), PROGRAM),
    )
    assert state.lots == {old_day: 110, sale_day: 40}
    state = applied(state, refund("R", "S", "10", at(11)))
    assert state.lots == {old_day: 110, sale_day: 20}
    assert lots.take_back({1: 5, 2: 3, 3: 10}, 2, 6) == ({1: 2, 3: 10}, 6)
    assert lots.take_back({1: 5}, 2, 9) == ({}, 5)


def test_a_refund_after_the_points_of_its_sale_expired_takes_nothing():
    """Issue 19, defect 1: with expiry shorter than the refund window, a refund after the
    sale's points expired drove the balance negative. It now takes back nothing."""
    program = replace(PROGRAM, expiry_after_days=30, expiry_notice_days=0)
    state = applied(MemberState(), sale("S", "20", T0), program=program)
    expiry_day = (T0 + timedelta(days=31)).date()
    state, outcome = apply_daily(state, expiry_day, program, NOW_MS, MEMBER)
    assert outcome is not None and ("expiry", -140) in outcome.applied.entries
    assert state.balance == 0
    state, outcome = apply_transaction(state, refund("R", "S", "20", at(40)), program, NOW_MS)
    assert outcome.applied.entries == ()
    assert state.balance == 0


def test_a_refund_never_takes_more_than_the_points_available():
    """Points spent on a redemption, or held for one, are not taken back below zero."""
    state = applied(MemberState(), sale("S", "20", T0))  # 140
    held_step = hold(at(1))
    state, _ = apply_redemption_step(state, held_step, PROGRAM, NOW_MS)
    held, _ = apply_transaction(state, refund("R", "S", "20", at(2)), PROGRAM, NOW_MS)
    assert held.balance == 100 and held.applied["R"].entries == (("refund_reversal", -40),)
    confirm = replace(held_step, step=saga.CONFIRM, occurred_at=at(1, 60))
    state, _ = apply_redemption_step(state, confirm, PROGRAM, NOW_MS)
    assert state.balance == 40
    state, outcome = apply_transaction(state, refund("R", "S", "20", at(2)), PROGRAM, NOW_MS)
    assert outcome.applied.entries == (("refund_reversal", -40),)
    assert state.balance == 0 and state.lots == {}


# ---- coupons ----------------------------------------------------------------------------


def test_coupon_validity_is_valid_days_times_24_hours_across_a_clock_change():
    """A coupon issued at 09:00 +01:00 on 2026-03-20 with valid_days 30 expires exactly
    30 x 86,400 s later: 10:00 +02:00 on 2026-04-19 on the wall clock (summer time began
    on 2026-03-29)."""
    issued = datetime.fromisoformat("2026-03-20T09:00:00+01:00")
    coupon = wallet.issue(
        MEMBER, "newsletter", "e1", CouponOffer("bonus_points", 100, 30), int(issued.timestamp())
    )
    assert coupon.expires_s == int(issued.timestamp()) + 30 * DAY_S
    held = {coupon.code: coupon}
    before = int(datetime.fromisoformat("2026-04-19T09:59:59+02:00").timestamp())
    edge = int(datetime.fromisoformat("2026-04-19T10:00:00+02:00").timestamp())
    assert wallet.redeem(held, coupon.code, MEMBER, "t", before)[0] == wallet.REDEEMED
    assert wallet.redeem(held, coupon.code, MEMBER, "t", edge)[0] == wallet.EXPIRED_COUPON
