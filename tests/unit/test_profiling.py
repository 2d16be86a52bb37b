"""Rolling stats, RFM, segments and win-back as pure transitions (issue 5 scenarios)."""

from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from loyalty.core.accounts import (
    LEDGER_HISTORY,
    apply_daily,
    apply_member_event,
    apply_transaction,
    remember_ledger,
)
from loyalty.core.predicates import PredicateError, compile_predicate
from loyalty.core.profile import member_profile
from loyalty.core.program import ProgramError, load_program, parse_program
from loyalty.core.render import render_daily, render_member_event, render_transaction
from loyalty.core.stats import LONGEST_WINDOW_DAYS
from loyalty.schemas.events import Transaction
from loyalty.schemas.outputs import COUPON_BONUS
from loyalty.schemas.state import MemberState, decode_state, encode_state
from tests.unit.builders import MEMBER, NOW_MS, PROGRAM, member_event, run

ZONE = ZoneInfo(PROGRAM.timezone)


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE)


def fill(
    tx_id: str,
    when: datetime,
    liters: str,
    amount: str = "10",
    fuel: str = "diesel",
    station: str = "st-1",
    **fields: object,
) -> Transaction:
    return Transaction(
        transaction_id=tx_id,
        member_id=MEMBER,
        station_id=station,
        occurred_at=when,
        fuel_type=fuel,
        liters=Decimal(liters),
        amount=Decimal(amount),
        **fields,  # type: ignore[arg-type]
    )


def signed_up() -> MemberState:
    signup = member_event("s", "signup", at(2026, 2, 1), locale="es", marketing_consent=True)
    return run(MemberState(), signup)[0]


def apply_all(state: MemberState, *fills: Transaction) -> tuple[MemberState, list[list[str]]]:
    """Apply sales in order; the state and each sale's segment changes as 'segment:change'."""
    changes = []
    for transaction in fills:
        state, outcome = apply_transaction(state, transaction, PROGRAM, NOW_MS)
        outputs = render_transaction(transaction, outcome.applied, state, PROGRAM)
        changes.append([f"{c.segment}:{c.change}" for c in outputs.segments])
    return state, changes


def daily_until(
    state: MemberState, first: date, last: date
) -> tuple[MemberState, list[tuple[str, str]], list[dict[str, object]]]:
    """Daily jobs from ``first`` to ``last``; (day, 'segment:change') pairs and the
    notifications they sent."""
    changes, notifications = [], []
    day = first
    while day <= last:
        state, outcome = apply_daily(state, day, PROGRAM, NOW_MS, MEMBER)
        if outcome is not None:
            outputs = render_daily(MEMBER, day, outcome.applied, state, PROGRAM)
            changes += [(day.isoformat(), f"{c.segment}:{c.change}") for c in outputs.segments]
            notifications += [{"kind": n.kind, **n.data} for n in outputs.notifications]
        day += timedelta(days=1)
    return state, changes, notifications


MARCH = (
    fill("t1", at(2026, 3, 1, 8), "20", "30", "diesel", "st-1"),
    fill("t2", at(2026, 3, 2, 9), "10", "15", "diesel", "st-2"),
    fill("t3", at(2026, 3, 5, 13), "40", "60", "gasoline95", "st-2"),
    fill("t4", at(2026, 3, 20, 18, 30), "30", "45", "diesel", "st-1"),
    fill("t5", at(2026, 3, 28, 23), "25", "37.50", "diesel", "st-3"),
)


def test_stats_rfm_and_sale_driven_segment_changes():
    state, changes = apply_all(signed_up(), *MARCH)

    # favourite fuel flips to gasoline95 (40 L against 30) and back (60 against 40);
    # morning_buyer: 2 of 3 sales in the morning (>= 60%), then 2 of 4.
    assert changes == [
        ["fuel:diesel:entered"],
        [],
        ["fuel:diesel:left", "morning_buyer:entered"],
        ["morning_buyer:left", "fuel:diesel:entered"],
        [],
    ]
    profile = member_profile(
        MEMBER, state, PROGRAM, int(at(2026, 3, 28, 23, 30).timestamp()) * 1000
    )
    assert profile["stats"] == {
        "liters_7d": 25.0,
        "liters_30d": 125.0,
        "liters_90d": 125.0,
        "amount_7d": 37.5,
        "amount_30d": 187.5,
        "amount_90d": 187.5,
        "sales_30d": 5,
        "sales_90d": 5,
        "last_sale_at": "2026-03-28T22:00:00+00:00",
        "days_since_last_sale": 0,
        "favourite_fuel": "diesel",
        # st-1 and st-2 both have 2 sales: the tie goes to the most recent (st-1, 20 March)
        "favourite_station": "st-1",
        "avg_liters_per_fill": 25.0,
        "daypart_shares_30d": {"morning": 0.4, "midday": 0.2, "evening": 0.2, "night": 0.2},
        # 40 + 100 welcome, 10, 80 + 150 mission, 60, 50
        "lifetime_points": 490,
        "lifetime_liters": 125.0,
        "lifetime_amount": 187.5,
        "lifetime_sales": 5,
    }
    # recency 0 days -> 5; 5 sales in 90 days (>= 4) -> 3; 187.50 spent (>= 100) -> 2
    assert profile["rfm"] == {"recency": 5, "frequency": 3, "monetary": 2, "score": "532"}
    assert profile["segments"] == ["fuel:diesel"]

    # Twenty days later the 7- and 30-day windows have moved on; recency 20 days -> 3.
    later = member_profile(MEMBER, state, PROGRAM, int(at(2026, 4, 17).timestamp()) * 1000)
    assert later["stats"]["liters_7d"] == 0.0
    assert later["stats"]["liters_30d"] == 55.0  # 20 and 28 March
    assert later["stats"]["sales_90d"] == 5
    assert later["stats"]["days_since_last_sale"] == 20
    assert later["rfm"]["score"] == "332"


def test_lapsed_through_the_daily_job_and_the_win_back_coupon_used_on_the_next_sale():
    state, _ = apply_all(signed_up(), *MARCH)
    state, changes, notifications = daily_until(state, date(2026, 3, 29), date(2026, 5, 1))

    # Last sale 28 March: 14 days on 11 April, 30 days on 27 April.
    assert changes == [
        ("2026-04-11", "at_risk_14d:entered"),
        ("2026-04-27", "at_risk_14d:left"),
        ("2026-04-27", "lapsed_30d:entered"),
    ]
    code = next(iter(state.coupons))
    assert notifications == [
        {
            "kind": "win_back",
            "code": code,
            "benefit": "bonus_points",
            "value": 200,
            "expires_on": "2026-05-11",  # 14 days
            "balance": 490,
        }
    ]
    comeback = fill("t6", at(2026, 5, 2, 9), "12", "18", coupon_codes=(code,))
    state, outcome = apply_transaction(state, comeback, PROGRAM, NOW_MS)
    outputs = render_transaction(comeback, outcome.applied, state, PROGRAM)
    assert (COUPON_BONUS, 200) in outcome.applied.entries
    assert outputs.reward.coupons == [
        {"code": code, "status": "redeemed", "benefit": "bonus_points", "value": 200}
    ]
    assert [(c.segment, c.change) for c in outputs.segments] == [("lapsed_30d", "left")]
    assert state.segments == ("fuel:diesel",)

    # A redelivered sale re-emits the same segment events, with the same ids.
    again, replay = apply_transaction(state, comeback, PROGRAM, NOW_MS)
    assert replay.duplicate and again == state
    replayed = render_transaction(comeback, replay.applied, again, PROGRAM)
    assert replayed.segments == outputs.segments


def test_daily_job_rerun_for_the_same_day_changes_nothing():
    state, _ = apply_all(signed_up(), *MARCH)
    state, first, _ = daily_until(state, date(2026, 4, 27), date(2026, 4, 27))
    again, outcome = apply_daily(state, date(2026, 4, 27), PROGRAM, NOW_MS, MEMBER)
    assert first == [("2026-04-27", "lapsed_30d:entered")]
    assert outcome is not None and outcome.duplicate and again == state
    rendered = render_daily(MEMBER, date(2026, 4, 27), outcome.applied, again, PROGRAM)
    assert [(c.segment, c.change) for c in rendered.segments] == [("lapsed_30d", "entered")]


def test_heavy_user_enters_and_leaves_with_the_30_day_window():
    fills = [fill(f"h{i}", at(2026, 3, 1 + 2 * i, 12), "40") for i in range(4)]  # 160 L
    state, changes = apply_all(signed_up(), *fills)
    assert "heavy_user:entered" in changes[3]
    # On 10 April the March fills are out of the 30-day window: 5 L in 30 days.
    state, changes = apply_all(state, fill("h9", at(2026, 4, 10, 12), "5"))
    assert changes == [["heavy_user:left"]]


def test_a_refund_takes_its_litres_and_amount_back_from_the_sale_day():
    state, _ = apply_all(signed_up(), fill("r1", at(2026, 3, 1), "40", "60"))
    refund = fill("r2", at(2026, 3, 3), "10", "15", type="refund", original_transaction_id="r1")
    state, _ = apply_all(state, refund)
    stats = member_profile(MEMBER, state, PROGRAM, int(at(2026, 3, 3).timestamp()) * 1000)["stats"]
    assert (stats["liters_30d"], stats["amount_30d"], stats["sales_30d"]) == (30.0, 45.0, 1)
    # 40 L -> 80 fuel points + 100 welcome; a quarter of the 180 credited is reversed
    assert stats["lifetime_points"] == 180 - 45
    assert (stats["lifetime_liters"], stats["lifetime_amount"]) == (30.0, 45.0)


def test_state_per_member_stays_bounded():
    """Five years of daily fills, with the daily job and the recent ledger as the agent
    keeps them: the stats hold 90 day buckets and the table value stays under 64 KiB."""
    state = signed_up()
    first = at(2021, 1, 1, 8)
    stations, fuels = ("st-1", "st-2", "st-3"), ("diesel", "gasoline95")
    for day in range(5 * 365 + 1):
        when = first + timedelta(days=day, hours=day % 14)
        transaction = fill(f"d{day}", when, "35.5", "52.10", fuels[day % 2], stations[day % 3])
        state, outcome = apply_transaction(state, transaction, PROGRAM, NOW_MS)
        outputs = render_transaction(transaction, outcome.applied, state, PROGRAM)
        state = remember_ledger(state, outputs.ledger)
        state, daily = apply_daily(state, when.date() + timedelta(days=1), PROGRAM, NOW_MS, MEMBER)
        if daily is not None:
            outputs = render_daily(
                MEMBER, when.date() + timedelta(days=1), daily.applied, state, PROGRAM
            )
            state = remember_ledger(state, outputs.ledger)
    stored = encode_state(state)
    print(f"\n5 years of daily fills: table value {len(stored):,} bytes")
    assert len(state.stats.buckets) == LONGEST_WINDOW_DAYS
    assert state.stats.lifetime_sales == 5 * 365 + 1
    assert len(state.recent_ledger) == LEDGER_HISTORY
    assert len(stored) < 64 * 1024
    assert decode_state(stored) == state


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("days_since_lastsale >= 30", "unknown field 'days_since_lastsale'"),
        ("favourite_fuel >= 'diesel'", "only == and != apply"),
        ("liters_30d >= 'many'", "is a number"),
        ("tier in [1, 2]", "is a text"),
        ("sales_30d >= 3 and", "ends too early"),
        ("(sales_30d >= 3", "expected ')'"),
        ("sales_30d >= 3 maybe", "unexpected 'maybe'"),
        ("", "is empty"),
    ],
)
def test_predicates_are_checked_when_compiled(text, error):
    with pytest.raises(PredicateError, match=error.replace("(", r"\(").replace(")", r"\)")):
        compile_predicate(text)


def test_predicate_semantics():
    fields = {
        "sales_30d": 4,
        "morning_share_30d": 0.75,
        "favourite_fuel": "diesel",
        "tier": "gold",
        "marketing_consent": True,
        "days_since_last_sale": None,
    }
    assert compile_predicate("sales_30d >= 3 and morning_share_30d >= 0.6")(fields)
    assert compile_predicate("not (tier in ['bronze', 'silver']) and marketing_consent == true")(
        fields
    )
    assert compile_predicate("favourite_fuel == 'lpg' or sales_30d > 3")(fields)
    # a figure without a value makes every comparison on it false, != included
    assert not compile_predicate("days_since_last_sale >= 0")(fields)
    assert not compile_predicate("days_since_last_sale != 5")(fields)


def test_the_program_names_the_segment_whose_predicate_is_wrong(tmp_path):
    text = Path("program/default.toml").read_text(encoding="utf-8")
    broken = text.replace('when = "liters_30d >= 150"', 'when = "litres_30d >= 150"')
    path = tmp_path / "program.toml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(ProgramError, match=r"segments\[3\]\.when.*unknown field 'litres_30d'"):
        load_program(path)


def test_win_back_must_name_a_segment():
    import tomllib

    with open("program/default.toml", "rb") as handle:
        data = tomllib.load(handle)
    data["win_back"]["segment"] = "lapsed_60d"
    with pytest.raises(ProgramError, match="win_back.segment"):
        parse_program(data)


def test_without_segments_nothing_is_evaluated():
    program = replace(PROGRAM, segments=(), win_back=None)
    state = signed_up()
    state, outcome = apply_transaction(state, MARCH[0], program, NOW_MS)
    assert state.segments == () and "segments" not in outcome.applied.details


def test_a_late_sale_is_evaluated_as_of_the_latest_day_on_record():
    state, _ = apply_all(signed_up(), *MARCH)
    state, changes, _ = daily_until(state, date(2026, 4, 27), date(2026, 4, 27))
    assert ("2026-04-27", "lapsed_30d:entered") in changes
    # A sale of 25 March (before the last one, 28 March) reaches the engine on 28 April:
    # the member is still 30 days past their last sale, so no segment changes.
    late = fill("late", at(2026, 3, 25, 12), "10", "15", "diesel", "st-1")
    state, changes = apply_all(state, late)
    assert changes == [[]]
    assert "lapsed_30d" in state.segments
    assert len([c for c in state.coupons.values() if c.source == "win_back"]) == 1


def test_a_member_event_that_issues_the_win_back_coupon_reports_it():
    state, _ = apply_all(signed_up(), *MARCH)
    # No daily job ran: a consent change on 27 April finds the member 30 days past.
    event = member_event("c1", "consents_changed", at(2026, 4, 27), marketing_consent=True)
    state, outcome = apply_member_event(state, event, PROGRAM, NOW_MS)
    outputs = render_member_event(event, outcome.applied, state, PROGRAM)
    assert ["lapsed_30d", "entered"] in outcome.applied.details["segments"]
    assert outputs.reward.coupon_issued is not None
    assert outputs.reward.coupon_issued["code"] == outcome.applied.details["win_back"]
    assert [n.kind for n in outputs.notifications] == ["win_back"]
