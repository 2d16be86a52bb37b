"""The program's mechanics as pure transitions: tiers, missions, coupons, member events,
localised notifications. Expected numbers are worked out by hand in each test."""

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from loyalty.core import codes
from loyalty.core.accounts import RejectedTransaction, apply_member_event, apply_transaction
from loyalty.core.render import render_member_event, render_transaction
from loyalty.schemas.events import MemberEvent, Transaction
from loyalty.schemas.state import MemberState, decode_state, encode_state
from tests.unit import builders
from tests.unit.builders import NOW_MS, PROGRAM, run

T0 = datetime.fromisoformat("2026-03-02T09:00:00+01:00")


def sale(tx_id: str, liters: str, days: float = 0, coupons: tuple[str, ...] = ()) -> Transaction:
    return builders.sale(tx_id, liters, T0 + timedelta(days=days), coupon_codes=coupons)


def member_event(event_id: str, kind: str, days: float = 0, **fields) -> MemberEvent:
    return builders.member_event(event_id, kind, T0 + timedelta(days=days), **fields)


def test_three_fills_in_seven_days_complete_the_mission_once_per_cooldown():
    state, outcomes = run(
        MemberState(),
        sale("a", "10"),
        sale("b", "10", days=3),
        sale("c", "10", days=6.9),  # third within 7 days: +150
        sale("d", "10", days=8),  # in cooldown
        sale("e", "10", days=9),
        sale("f", "10", days=37),  # 30-day cooldown over, but only 1 sale in 7 days
    )
    assert [o.applied.details.get("missions") for o in outcomes] == [
        None,
        None,
        ["three_fills_7d"],
        None,
        None,
        None,
    ]
    assert ("mission_bonus", 150) in outcomes[2].applied.entries
    assert state.balance == 6 * 10 + 100 + 150


def test_fills_outside_the_window_do_not_count():
    _, outcomes = run(
        MemberState(), sale("a", "10"), sale("b", "10", days=4), sale("c", "10", days=7.5)
    )
    assert all("missions" not in o.applied.details for o in outcomes)


def test_upgrade_at_once_on_the_crossing_credit_and_the_next_fill_uses_the_new_tier():
    # 450 litres -> 900 fuel points + 100 welcome = 1000: silver on this very sale.
    state, outcomes = run(MemberState(), sale("a", "450"), sale("b", "100", days=1))
    first, second = outcomes
    assert first.applied.details["tier_change"] == ["bronze", "silver"]
    assert first.applied.entries[0] == ("fuel_points", 900)  # earned at bronze
    assert second.applied.entries[0] == ("fuel_points", 250)  # floor(100 x 2 x 1.25)
    assert state.tier == "silver"
    outputs = render_transaction(sale("a", "450"), first.applied, state, PROGRAM)
    assert outputs.reward.tier_change == {"from": "bronze", "to": "silver"}
    assert "tier_changed" in [n.kind for n in outputs.notifications]


def test_refund_reversals_reduce_tier_earning():
    state, _ = run(MemberState(), sale("a", "400"))  # 800 + 100
    day = max(state.earned_by_day)
    refund = builders.sale(
        "r", "200", T0 + timedelta(days=1), type="refund", original_transaction_id="a"
    )
    state, _ = run(state, refund)
    assert state.earned_by_day[day] == 900 - 450


def newsletter_coupon(state: MemberState) -> str:
    return next(iter(state.coupons))


def test_newsletter_coupon_is_issued_once_and_redeemed_once():
    state, outcomes = run(
        MemberState(),
        member_event("s", "signup", locale="es", marketing_consent=True),
        member_event("n1", "newsletter_subscribed"),
        member_event("n2", "newsletter_subscribed", days=1),
    )
    assert len(state.coupons) == 1
    code = newsletter_coupon(state)
    assert outcomes[1].applied.details == {"coupon_issued": code}
    assert outcomes[2].applied.details == {}

    state, (used, again) = run(
        state,
        sale("a", "10", days=2, coupons=(code.lower(),)),
        sale("b", "10", days=3, coupons=(code,)),
    )
    assert used.applied.entries == (
        ("fuel_points", 10),
        ("welcome_bonus", 100),
        ("coupon_bonus", 100),
    )
    assert used.applied.details["coupons"] == [
        {"code": code, "status": "redeemed", "benefit": "bonus_points", "value": 100}
    ]
    assert again.applied.details["coupons"] == [{"code": code, "status": "coupon_used"}]
    assert again.applied.entries == (("fuel_points", 10),)


def test_invalid_coupons_are_reported_and_the_sale_still_earns():
    state, _ = run(MemberState(), member_event("n1", "newsletter_subscribed"))
    code = newsletter_coupon(state)
    someone_elses = codes.coupon_code("m-2", "n9")
    state, (expired, other) = run(
        state,
        sale("a", "10", days=31, coupons=(code,)),
        sale("b", "10", days=32, coupons=(someone_elses, "FREEFUEL")),
    )
    assert expired.applied.details["coupons"] == [{"code": code, "status": "expired_coupon"}]
    assert other.applied.details["coupons"] == [
        {"code": someone_elses, "status": "not_owner"},
        {"code": "FREEFUE1", "status": "unknown_coupon"},
    ]
    assert expired.applied.entries[0] == ("fuel_points", 10)


def test_notifications_are_localised_and_marketing_needs_consent():
    state, (signup, subscribed) = run(
        MemberState(),
        member_event("s", "signup", locale="pl", marketing_consent=False),
        member_event("n1", "newsletter_subscribed"),
    )
    welcome = render_member_event(member_event("s", "signup"), signup.applied, state, PROGRAM)
    assert [n.kind for n in welcome.notifications] == ["welcome"]
    assert welcome.notifications[0].locale == "pl"
    assert welcome.notifications[0].title == "Witamy w klubie!"
    assert state.referral_code in welcome.notifications[0].body
    coupon = render_member_event(
        member_event("n1", "newsletter_subscribed"), subscribed.applied, state, PROGRAM
    )
    assert coupon.notifications == []  # coupon_issued is marketing: no consent, no message
    assert coupon.reward.coupon_issued["code"] == newsletter_coupon(state)

    # Consent given later changes nothing the subscription sent (a replay is identical);
    # a member who had consented when subscribing gets the message.
    state, (consent,) = run(
        state, member_event("c", "consents_changed", days=1, marketing_consent=True)
    )
    replay = render_member_event(
        member_event("n1", "newsletter_subscribed"), subscribed.applied, state, PROGRAM
    )
    assert replay.notifications == []
    state, (_, subscribed) = run(
        MemberState(),
        member_event("s", "signup", locale="pl", marketing_consent=True),
        member_event("n1", "newsletter_subscribed"),
    )
    coupon = render_member_event(
        member_event("n1", "newsletter_subscribed"), subscribed.applied, state, PROGRAM
    )
    assert [n.kind for n in coupon.notifications] == ["coupon_issued"]
    assert "2026-04-01" in coupon.notifications[0].body  # 30 days after 2026-03-02


def test_unknown_locale_falls_back_to_english():
    state, (signup,) = run(MemberState(), member_event("s", "signup", locale="fr"))
    welcome = render_member_event(member_event("s", "signup"), signup.applied, state, PROGRAM)
    assert welcome.notifications[0].title == "Welcome to the club!"


def test_profile_updates_keep_absent_fields_and_duplicates_change_nothing():
    state, _ = run(
        MemberState(),
        member_event("s", "signup", locale="it", email="a@example.com", marketing_consent=True),
        member_event("p", "profile_updated", phone="+34600000000"),
    )
    assert state.profile.locale == "it" and state.profile.email == "a@example.com"
    assert state.profile.phone == "+34600000000" and state.profile.marketing_consent
    again, (replay,) = run(state, member_event("p", "profile_updated", phone="+34600000000"))
    assert replay.duplicate and again is state
    with pytest.raises(RejectedTransaction) as error:  # the same id with other content
        run(state, member_event("p", "profile_updated", phone="+1"))
    assert error.value.reason == "event_id_conflict"
    assert decode_state(encode_state(state)) == state


def test_discount_coupons_are_validated_and_marked_used_for_the_pos():
    import tomllib

    from loyalty.core.program import parse_program

    data = tomllib.loads(Path("program/default.toml").read_text())
    data["coupons"]["newsletter"] = {"benefit": "discount_percent", "value": 10, "valid_days": 30}
    program = parse_program(data)
    state, _ = apply_member_event(
        MemberState(), member_event("n1", "newsletter_subscribed"), program, NOW_MS
    )
    code = newsletter_coupon(state)
    state, used = apply_transaction(
        state, sale("a", "10", days=1, coupons=(code,)), program, NOW_MS
    )
    assert used.applied.details["coupons"] == [
        {"code": code, "status": "redeemed", "benefit": "discount_percent", "value": 10}
    ]
    assert [reason for reason, _ in used.applied.entries] == ["fuel_points", "welcome_bonus"]
    assert state.coupons[code].used_by == "a"
