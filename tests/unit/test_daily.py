"""The daily job as a pure transition: birthdays, expiry and its notice, tier downgrade."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

from loyalty.core.accounts import apply_daily
from loyalty.core.render import render_daily
from loyalty.schemas.state import MemberState
from loyalty.streams.topics import daily_commands
from tests.unit.builders import NOW_MS, PROGRAM, member_event, run, sale

PROGRAM_ZONE = ZoneInfo(PROGRAM.timezone)


def at(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=PROGRAM_ZONE)


def member(birth_date: str | None = None, sales: tuple[tuple[date, str], ...] = ()) -> MemberState:
    signup = member_event(
        "s",
        "signup",
        at(date(2024, 1, 1)),
        birth_date=date.fromisoformat(birth_date) if birth_date else None,
        locale="es",
        marketing_consent=True,
    )
    fills = [sale(f"t{index}", liters, at(day)) for index, (day, liters) in enumerate(sales)]
    return run(MemberState(), signup, *fills)[0]


def test_birthday_bonus_once_a_year_on_the_day():
    state = member("1990-06-15")
    state, before = apply_daily(state, date(2026, 6, 14), PROGRAM, NOW_MS, "m-1")
    assert before is None
    state, on_the_day = apply_daily(state, date(2026, 6, 15), PROGRAM, NOW_MS, "m-1")
    assert on_the_day.applied.entries == (("birthday_bonus", 200),)
    assert state.balance == 200
    again, replay = apply_daily(state, date(2026, 6, 15), PROGRAM, NOW_MS, "m-1")
    assert replay.duplicate and again is state
    older, nothing = apply_daily(state, date(2026, 6, 10), PROGRAM, NOW_MS, "m-1")
    assert nothing is None and older.balance == 200
    outputs = render_daily("m-1", date(2026, 6, 15), on_the_day.applied, state, PROGRAM)
    assert [n.kind for n in outputs.notifications] == ["birthday"]
    assert outputs.notifications[0].title == "¡Feliz cumpleaños!"
    assert [(e.reason, e.delta, e.balance_after) for e in outputs.ledger] == [
        ("birthday_bonus", 200, 200)
    ]


def test_29_february_counts_on_28_february_in_other_years():
    state = member("2004-02-29")
    _, common_year = apply_daily(state, date(2027, 2, 28), PROGRAM, NOW_MS, "m-1")
    assert common_year.applied.entries == (("birthday_bonus", 200),)
    _, leap_eve = apply_daily(state, date(2028, 2, 28), PROGRAM, NOW_MS, "m-1")
    assert leap_eve is None
    _, leap_day = apply_daily(state, date(2028, 2, 29), PROGRAM, NOW_MS, "m-1")
    assert leap_day.applied.entries == (("birthday_bonus", 200),)


def test_points_expire_oldest_first_after_365_days_with_a_notice_7_days_before():
    # 2025-01-10: 10 + 100 welcome; 2025-03-01: 20 L -> 40.
    state = member(sales=((date(2025, 1, 10), "10"), (date(2025, 3, 1), "20")))
    assert state.balance == 150
    _, notice = apply_daily(state, date(2026, 1, 3), PROGRAM, NOW_MS, "m-1")
    assert notice.applied.details["expiring"] == [110, "2026-01-10"]
    outputs = render_daily("m-1", date(2026, 1, 3), notice.applied, state, PROGRAM)
    assert [n.kind for n in outputs.notifications] == ["points_expiring"]
    state, expiry = apply_daily(state, date(2026, 1, 10), PROGRAM, NOW_MS, "m-1")
    assert expiry.applied.entries == (("expiry", -110),)
    assert state.balance == 40
    state, later = apply_daily(state, date(2026, 3, 1), PROGRAM, NOW_MS, "m-1")
    assert later.applied.entries == (("expiry", -40),)
    assert state.balance == 0 and state.lots == {}


def test_tier_downgrade_only_at_the_daily_job():
    state = member(sales=((date(2025, 1, 10), "450"),))  # 1,000 earned: silver
    assert state.tier == "silver"
    state, kept = apply_daily(state, date(2026, 1, 9), PROGRAM, NOW_MS, "m-1")
    assert state.tier == "silver" and "tier_change" not in (kept.applied.details if kept else {})
    state, review = apply_daily(state, date(2026, 1, 10), PROGRAM, NOW_MS, "m-1")
    assert review.applied.details["tier_change"] == ["silver", "bronze"]
    assert state.tier == "bronze"


def test_one_daily_command_per_partition():
    commands = daily_commands(date(2026, 6, 1), 8)
    assert [p for p, _, _ in commands] == list(range(8))
    assert len({key for _, key, _ in commands}) == 8


def test_a_job_run_late_for_a_past_date_counts_the_later_credits():
    # Silver from a fill of 10 January 2025, kept by a fill of 12 January 2026; the job for
    # 10 January 2026 runs only after that fill (`loyalty daily --date` for a missed day).
    state = member(sales=((date(2025, 1, 10), "450"), (date(2026, 1, 12), "450")))
    assert state.tier == "silver"
    state, outcome = apply_daily(state, date(2026, 1, 10), PROGRAM, NOW_MS, "m-1")
    assert state.tier == "silver"
    assert "tier_change" not in (outcome.applied.details if outcome else {})
