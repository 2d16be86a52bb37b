"""Repeated ids: an identical repeat re-emits the stored records byte for byte; a repeat
with other content is refused (issue 19, defect 2)."""

from dataclasses import replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from loyalty.core import saga
from loyalty.core.accounts import (
    RejectedTransaction,
    apply_daily,
    apply_member_event,
    apply_redemption_step,
    apply_referral_outcome,
    apply_transaction,
    content_fingerprint,
)
from loyalty.core.render import (
    Outputs,
    render_daily,
    render_member_event,
    render_redemption,
    render_referral,
    render_transaction,
)
from loyalty.schemas.events import (
    ACCEPTED,
    REFEREE,
    MemberEvent,
    ReferralOutcome,
    Transaction,
)
from loyalty.schemas.state import MemberState, decode_state, encode_state
from tests.unit.builders import MEMBER, NOW_MS, PROGRAM, hold, member_event, sale

T0 = datetime.fromisoformat("2026-03-10T10:00:00+01:00")
LATER_MS = NOW_MS + 86_400_000


def at(days: float = 0) -> datetime:
    return T0 + timedelta(days=days)


def records(outputs: Outputs) -> list[bytes]:
    """The records the agent would send, serialised as it serialises them."""
    dumps = orjson.dumps
    out = [dumps(e) for e in outputs.ledger]
    out += [dumps(outputs.reward)] if outputs.reward is not None else []
    out += [dumps(n) for n in outputs.notifications]
    out += [dumps(s) for s in outputs.segments]
    out += [dumps(op) for op in outputs.referral_ops]
    return out + [dumps(step) for step in outputs.saga]


def tx(
    state: MemberState, event: Transaction, now_ms: int = NOW_MS
) -> tuple[MemberState, list[bytes], bool]:
    state, outcome = apply_transaction(state, event, PROGRAM, now_ms)
    return (
        state,
        records(render_transaction(event, outcome.applied, state, PROGRAM)),
        outcome.duplicate,
    )


def member(
    state: MemberState, event: MemberEvent, now_ms: int = NOW_MS
) -> tuple[MemberState, list[bytes], bool]:
    state, outcome = apply_member_event(state, event, PROGRAM, now_ms)
    return (
        state,
        records(render_member_event(event, outcome.applied, state, PROGRAM)),
        outcome.duplicate,
    )


def changed_member(state: MemberState) -> MemberState:
    """The member after changing locale, withdrawing marketing consent and reaching silver."""
    state, _, _ = member(
        state, member_event("p2", "profile_updated", at(2), locale="it", marketing_consent=False)
    )
    state, _, _ = tx(state, sale("BIG", "1000", at(3)))
    assert state.tier == "silver" and state.profile.locale == "it"
    return state


def enrolled() -> MemberState:
    signup = member_event(
        "s1", "signup", at(0), locale="es", marketing_consent=True, birth_date=date(1990, 3, 12)
    )
    state, _, _ = member(MemberState(), signup)
    return state


# ---- conflicts ----------------------------------------------------------------------------


def test_a_repeated_transaction_id_with_other_content_is_refused():
    """Issue 19, defect 2: sale B-S1 of 20 L, then B-S1 again with 25 L."""
    state, first, _ = tx(MemberState(), sale("B-S1", "20", at(0)))
    with pytest.raises(RejectedTransaction) as error:
        apply_transaction(state, sale("B-S1", "25", at(0)), PROGRAM, LATER_MS)
    assert error.value.reason == "transaction_id_conflict"
    with pytest.raises(RejectedTransaction) as error:
        apply_transaction(
            state, replace(sale("B-S1", "20", at(0)), station_id="st-9"), PROGRAM, LATER_MS
        )
    assert error.value.reason == "transaction_id_conflict"
    # The same content written otherwise (20.0 L) is the same; the same instant with another
    # UTC offset is not (occurred_at is rendered with its offset).
    again, replayed, duplicate = tx(state, sale("B-S1", "20.0", at(0)), LATER_MS)
    assert duplicate and again is state and replayed == first
    utc = at(0).astimezone(ZoneInfo("UTC"))
    with pytest.raises(RejectedTransaction) as error:
        apply_transaction(state, sale("B-S1", "20", utc), PROGRAM, LATER_MS)
    assert error.value.reason == "transaction_id_conflict"


def test_a_repeated_event_id_with_other_content_is_refused():
    state = enrolled()
    with pytest.raises(RejectedTransaction) as error:
        apply_member_event(
            state,
            member_event(
                "s1",
                "signup",
                at(0),
                locale="it",
                marketing_consent=True,
                birth_date=date(1990, 3, 12),
            ),
            PROGRAM,
            LATER_MS,
        )
    assert error.value.reason == "event_id_conflict"
    with pytest.raises(RejectedTransaction) as error:
        apply_member_event(state, member_event("s1", "profile_updated", at(0)), PROGRAM, LATER_MS)
    assert error.value.reason == "event_id_conflict"


# ---- identical repeats --------------------------------------------------------------------


def test_a_repeated_sale_re_emits_its_records_byte_identical_after_the_member_changed():
    state, first, _ = tx(enrolled(), sale("S", "20", at(1)))
    state = changed_member(state)
    again, replayed, duplicate = tx(state, sale("S", "20", at(1)), LATER_MS)
    assert duplicate and again is state
    assert replayed == first


def test_a_repeated_refund_re_emits_its_records_byte_identical():
    state, _, _ = tx(enrolled(), sale("S", "20", at(1)))
    refund = sale("R", "5", at(1.5), type="refund", original_transaction_id="S")
    state, first, _ = tx(state, refund)
    state = changed_member(state)
    _, replayed, duplicate = tx(state, refund, LATER_MS)
    assert duplicate and replayed == first


def test_a_repeated_member_event_re_emits_its_records_byte_identical():
    state = enrolled()
    subscribe = member_event("n1", "newsletter_subscribed", at(1))
    state, first, _ = member(state, subscribe)
    assert any(b'"coupon_issued"' in record for record in first)
    state = changed_member(state)
    _, replayed, duplicate = member(state, subscribe, LATER_MS)
    assert duplicate and replayed == first


def test_a_repeated_daily_job_re_emits_its_records_byte_identical():
    state = enrolled()
    birthday = date(2026, 3, 12)
    state, outcome = apply_daily(state, birthday, PROGRAM, NOW_MS, MEMBER)
    assert outcome is not None
    first = records(render_daily(MEMBER, birthday, outcome.applied, state, PROGRAM))
    assert any(b'"birthday"' in record for record in first)
    state = changed_member(state)
    state, outcome = apply_daily(state, birthday, PROGRAM, LATER_MS, MEMBER)
    assert outcome is not None and outcome.duplicate
    assert records(render_daily(MEMBER, birthday, outcome.applied, state, PROGRAM)) == first


def test_a_repeated_referral_outcome_re_emits_its_records_byte_identical():
    signup = member_event("s1", "signup", at(0), locale="es", referral_code="ABCDEFGH")
    state, _, _ = member(MemberState(), signup)
    outcome = ReferralOutcome(MEMBER, REFEREE, "s1", "ABCDEFGH", ACCEPTED, at(0))
    state, applied = apply_referral_outcome(state, outcome, PROGRAM, NOW_MS)
    first = records(render_referral(outcome, applied.applied, state, PROGRAM))
    state = changed_member(state)
    state, applied = apply_referral_outcome(state, outcome, PROGRAM, LATER_MS)
    assert applied.duplicate
    assert records(render_referral(outcome, applied.applied, state, PROGRAM)) == first


def test_a_repeated_redemption_step_re_emits_its_records_byte_identical():
    state, _, _ = tx(enrolled(), sale("S", "20", at(1)))
    held_step = replace(
        hold(at(1.1), reward_name={"es": "café", "it": "caffè", "en": "coffee"}),
        requested_at=at(1).isoformat(),
    )
    state, _ = apply_redemption_step(state, held_step, PROGRAM, NOW_MS)
    confirm = replace(held_step, step=saga.CONFIRM, occurred_at=at(1.2))
    state, outcome = apply_redemption_step(state, confirm, PROGRAM, NOW_MS)
    first = records(render_redemption(confirm, outcome.applied, state, PROGRAM))
    assert any("café".encode() in record for record in first)
    state = changed_member(state)
    state, outcome = apply_redemption_step(state, confirm, PROGRAM, LATER_MS)
    assert outcome.duplicate
    assert records(render_redemption(confirm, outcome.applied, state, PROGRAM)) == first


# ---- what is stored -------------------------------------------------------------------------


def test_what_a_replay_needs_is_stored_compactly():
    """The content fingerprint and the notification audience cost a few bytes per applied
    event, and a state stored before them still decodes and replays."""
    state, _, _ = tx(enrolled(), sale("S", "20", at(1)))
    stored = state.applied.stored["S"]
    assert len(orjson.dumps(stored[9:])) <= 32, stored
    assert decode_state(encode_state(state)) == state
    old = replace(state, applied=type(state.applied)({"S": stored[:9]}))
    _, outcome = apply_transaction(
        decode_state(encode_state(old)), sale("S", "25", at(1)), PROGRAM, NOW_MS
    )
    assert outcome.duplicate  # no fingerprint stored: the stored outcome, as before


def test_the_content_fingerprint_is_pinned():
    """A fingerprint is stored in every member's state: any change to what it covers would
    refuse identical repeats of events applied before the change. Fields at their default
    are left out, so a field added to the contract later leaves it as it is."""
    event = sale("B-S1", "20", at(0))
    assert content_fingerprint(event) == content_fingerprint(sale("B-S1", "20.000", at(0)))
    assert content_fingerprint(event) != content_fingerprint(sale("B-S1", "20.001", at(0)))
    utc = at(0).astimezone(ZoneInfo("UTC"))
    assert content_fingerprint(event) != content_fingerprint(sale("B-S1", "20", utc))
    assert content_fingerprint(event) == "eDMUnQ3Scj4"
    signup = member_event(
        "s1", "signup", at(0), locale="es", marketing_consent=True, birth_date=date(1990, 3, 12)
    )
    assert content_fingerprint(signup) == "lBQzzKBKS9M"
