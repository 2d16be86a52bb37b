"""Pure state transitions of a member account: (state, event, now) -> (state, outcome).

Idempotent by event id (``transaction_id``, ``event_id``): an event already applied returns
the state unchanged and the stored outcome, so the agent can re-emit the very same outputs
(same ids, byte for byte) after a redelivery without crediting twice. The stored outcome
keeps a fingerprint of the event's content: a repeat of the id with other content is
refused (``transaction_id_conflict``, ``event_id_conflict``) instead of re-emitting records
that would mix the two.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty.core import codes, lots, saga, stats
from loyalty.core import coupons as wallet
from loyalty.core.program import Program
from loyalty.core.rules import (
    earned_in_window,
    fuel_points,
    is_birthday,
    mission_completed,
    reversal_points,
    tier_as_of_day,
    tier_for,
    tier_named,
)
from loyalty.core.segments import ENTERED, changes, segments_of
from loyalty.schemas.events import (
    ACCEPTED,
    CANCELLED,
    CONSENTS_CHANGED,
    FULFILLED,
    NEWSLETTER_SUBSCRIBED,
    PROFILE_UPDATED,
    REFERRER,
    SALE,
    SIGNUP,
    MemberEvent,
    RedemptionStep,
    ReferralOutcome,
    Transaction,
)
from loyalty.schemas.outputs import (
    BIRTHDAY_BONUS,
    COUPON_BONUS,
    EXPIRY,
    FUEL_POINTS,
    MISSION_BONUS,
    REDEMPTION,
    REDEMPTION_REFUND,
    REFERRAL_BONUS,
    REFUND_REVERSAL,
    WELCOME_BONUS,
    LedgerEntry,
)
from loyalty.schemas.state import AppliedEvent, Coupon, MemberState, Profile, Redemption, Stats

# Dead-letter reasons produced here.
UNKNOWN_ORIGINAL_TRANSACTION = "unknown_original_transaction"
STALE_TRANSACTION = "stale_transaction"
MEMBER_ERASED = "member_erased"
UNKNOWN_REFERRAL_CLAIM = "unknown_referral_claim"
UNKNOWN_HOLD = "unknown_hold"
TRANSACTION_ID_CONFLICT = "transaction_id_conflict"
EVENT_ID_CONFLICT = "event_id_conflict"

_DAY_S = 86_400
LEDGER_HISTORY = 50
"""Ledger entries remembered per member for the profile API (the topic has them all)."""


class RejectedTransaction(ValueError):
    """A well-formed event the member's state cannot accept."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Outcome:
    applied: AppliedEvent
    duplicate: bool
    """True when the event had been applied before (nothing changed now)."""


def day_of(epoch_s: int, program: Program) -> int:
    """Calendar day (ordinal) of an instant in the program's time zone."""
    return datetime.fromtimestamp(epoch_s, ZoneInfo(program.timezone)).date().toordinal()


def content_fingerprint(event: Transaction | MemberEvent) -> str:
    """A short hash of an input event's content, stored with its outcome to tell an
    identical repeat of its id from a conflicting one: every field of the decoded event but
    those at their default (so a field added to the contract later changes no fingerprint
    already stored), numbers by value (20 and 20.0 are the same), times with their UTC
    offset (as the outputs show them). 64 bits as base64url: 11 characters."""
    content = {}
    for spec in fields(event):
        value = getattr(event, spec.name)
        if spec.default is not MISSING and value == spec.default:
            continue
        content[spec.name] = _canonical(value)
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(text.encode()).digest()[:8]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value.normalize())
    if isinstance(value, date):  # a datetime too: isoformat keeps its offset
        return value.isoformat()
    if isinstance(value, tuple):
        return [_canonical(item) for item in value]
    return value


def _conflicts(previous: AppliedEvent, fingerprint: str) -> bool:
    """True when a repeated id comes with other content than the event applied before (an
    outcome stored before fingerprints were kept is taken as identical)."""
    return previous.fingerprint is not None and previous.fingerprint != fingerprint


def _conflict_message(id_name: str, event_id: str) -> str:
    return (
        f"{id_name} {event_id!r} was applied before with other content; a repeat must be "
        "identical (nothing of this one is applied)"
    )


def _audience(state: MemberState, program: Program) -> tuple[str, bool]:
    """The locale the member's notifications are wanted in, and their marketing consent:
    recorded with each outcome so that a replay renders as the first time."""
    return state.profile.locale or program.default_locale, state.profile.marketing_consent


def apply_transaction(
    state: MemberState, transaction: Transaction, program: Program, processed_ms: int
) -> tuple[MemberState, Outcome]:
    """Apply a sale or refund to a member's state."""
    fingerprint = content_fingerprint(transaction)
    previous = state.applied.get(transaction.transaction_id)
    if previous is not None:
        if _conflicts(previous, fingerprint):
            message = _conflict_message("transaction_id", transaction.transaction_id)
            raise RejectedTransaction(TRANSACTION_ID_CONFLICT, message)
        return state, Outcome(applied=previous, duplicate=True)

    occurred_s = int(transaction.occurred_at.timestamp())
    window_s = program.refund_window_days * _DAY_S
    # Neither a sale nor a refund changes the event time of a remembered transaction.
    newest_s = state.applied.newest_occurred_s()
    if occurred_s < newest_s - window_s:
        raise RejectedTransaction(
            STALE_TRANSACTION,
            f"transaction is older than the {program.refund_window_days}-day window of the "
            "member's latest activity, so a duplicate could no longer be recognised",
        )
    if transaction.type == SALE:
        state, applied = _apply_sale(state, transaction, program, occurred_s, processed_ms)
    else:
        state, applied = _apply_refund(state, transaction, program, occurred_s, processed_ms)
    day = day_of(occurred_s, program)
    state = _resegment(
        state,
        program,
        day,
        transaction.member_id,
        applied.details,
        occurred_s,
        transaction.transaction_id,
    )
    locale, consent = _audience(state, program)
    applied = replace(applied, fingerprint=fingerprint, locale=locale, consent=consent)
    keep_from_s = max(newest_s, occurred_s) - window_s
    applied_log = state.applied.since(keep_from_s).with_event(transaction.transaction_id, applied)
    keep_from_day = day - program.tier_window_days
    earned = {d: points for d, points in state.earned_by_day.items() if d > keep_from_day}
    new_state = replace(state, applied=applied_log, earned_by_day=earned)
    return new_state, Outcome(applied=applied, duplicate=False)


def _credit(
    state: MemberState,
    day: int,
    points: int,
    program: Program,
    details: dict[str, Any],
    stats_after: Stats | None = None,
) -> MemberState:
    """Add earned points to the day's lot and tier earning; upgrade at once on crossing a
    threshold (recorded in ``details["tier_change"]``). ``stats_after``: the member's stats
    with this credit already counted (a sale's), else the points are added to them here."""
    if points <= 0:
        return state if stats_after is None else replace(state, stats=stats_after)
    earned_by_day = {**state.earned_by_day, day: state.earned_by_day.get(day, 0) + points}
    tier = tier_named(state.tier, program.tiers)
    # A late credit is judged as of the member's latest day on record, not its own day.
    as_of = tier_as_of_day(day, earned_by_day, _last_daily_day(state))
    reached = tier_for(
        earned_in_window(earned_by_day, as_of, program.tier_window_days), program.tiers
    )
    if reached.min_points > tier.min_points:
        details["tier_change"] = [tier.name, reached.name]
        tier = reached
    return replace(
        state,
        balance=state.balance + points,
        earned_by_day=earned_by_day,
        lots=lots.credit(state.lots, day, points),
        tier=tier.name,
        stats=stats.add_points(state.stats, points) if stats_after is None else stats_after,
    )


def _last_daily_day(state: MemberState) -> int | None:
    return date.fromisoformat(state.last_daily).toordinal() if state.last_daily else None


def _enrol(state: MemberState, occurred_at: datetime, member_id: str) -> MemberState:
    return replace(
        state, enrolled_at=occurred_at.isoformat(), referral_code=codes.referral_code(member_id)
    )


def _apply_sale(
    state: MemberState,
    sale: Transaction,
    program: Program,
    occurred_s: int,
    processed_ms: int,
) -> tuple[MemberState, AppliedEvent]:
    details: dict[str, Any] = {}
    tier = tier_named(state.tier, program.tiers)
    entries: list[tuple[str, int]] = []
    earned = fuel_points(sale.liters, program.fuel_points, tier).points
    if earned:
        entries.append((FUEL_POINTS, earned))
    enrolled = state.enrolled_at is None
    if enrolled:
        state = _enrol(state, sale.occurred_at, sale.member_id)
    if not state.welcome_given and program.welcome_bonus_points:
        entries.append((WELCOME_BONUS, program.welcome_bonus_points))
        state = replace(state, welcome_given=True)

    state, coupon_results = _redeem_coupons(state, sale, occurred_s, entries)
    if coupon_results:
        details["coupons"] = coupon_results
    state, missions = _complete_missions(state, sale, program, occurred_s, entries)
    if missions:
        details["missions"] = missions

    details["tier"] = tier.name
    local = datetime.fromtimestamp(occurred_s, ZoneInfo(program.timezone))
    day = local.toordinal()
    points = sum(d for _, d in entries)
    recorded = stats.record_sale(
        state.stats,
        day,
        local.hour,
        occurred_s,
        sale.liters,
        sale.amount,
        sale.fuel_type,
        sale.station_id,
        max(points, 0),
    )
    state = _credit(state, day, points, program, details, recorded)
    applied = AppliedEvent(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=state.balance,
        liters=sale.liters,
        entries=tuple(entries),
        enrolled=enrolled,
        details=details,
    )
    return state, applied


def _redeem_coupons(
    state: MemberState, sale: Transaction, occurred_s: int, entries: list[tuple[str, int]]
) -> tuple[MemberState, list[dict[str, Any]]]:
    if not sale.coupon_codes:
        return state, []
    results = []
    held: dict[str, Coupon] = dict(state.coupons)
    for presented in sale.coupon_codes:
        status, used = wallet.redeem(
            held, presented, sale.member_id, sale.transaction_id, occurred_s
        )
        result: dict[str, Any] = {"code": codes.normalize(presented), "status": status}
        if used is not None:
            held[used.code] = used
            result.update(benefit=used.benefit, value=used.value)
            if used.benefit == "bonus_points":
                entries.append((COUPON_BONUS, used.value))
        results.append(result)
    return replace(state, coupons=held), results


def _complete_missions(
    state: MemberState,
    sale: Transaction,
    program: Program,
    occurred_s: int,
    entries: list[tuple[str, int]],
) -> tuple[MemberState, list[str]]:
    if not program.missions:
        return state, []
    longest_window_s = max(mission.window_days for mission in program.missions) * _DAY_S
    # Only the sales inside a mission window can count, by their litres net of refunds.
    sales = state.applied.sales_after(occurred_s - longest_window_s)
    sales.append((occurred_s, sale.liters))
    completed = []
    awarded = dict(state.mission_awarded_s)
    for mission in program.missions:
        last_award_s = awarded.get(mission.id)
        if mission_completed(mission, sales, occurred_s, last_award_s, sale.liters):
            awarded[mission.id] = occurred_s
            completed.append(mission.id)
            if mission.bonus_points:
                entries.append((MISSION_BONUS, mission.bonus_points))
    if completed:
        state = replace(state, mission_awarded_s=awarded)
    return state, completed


def _apply_refund(
    state: MemberState,
    refund: Transaction,
    program: Program,
    occurred_s: int,
    processed_ms: int,
) -> tuple[MemberState, AppliedEvent]:
    original_id = refund.original_transaction_id or ""
    original = state.applied.get(original_id)
    # A sale is remembered while the member's newest transaction is within the window of
    # it; the refund itself must be too.
    window_s = program.refund_window_days * _DAY_S
    if (
        original is None
        or original.refund_of is not None
        or occurred_s - original.occurred_s > window_s
    ):
        raise RejectedTransaction(
            UNKNOWN_ORIGINAL_TRANSACTION,
            f"original_transaction_id {original_id!r} is not a sale of member "
            f"{refund.member_id!r} within the refund window ({program.refund_window_days} "
            "days after the sale, for the refund and the member's newest transaction)",
        )
    credited = sum(delta for _, delta in original.entries if delta > 0)
    share, liters = reversal_points(
        credited, original.liters, original.refunded_liters, refund.liters
    )
    sale_day = day_of(original.occurred_s, program)
    held_lots, points = lots.take_back(
        state.lots, sale_day, _reclaimable(state, share, sale_day, program)
    )
    entries = ((REFUND_REVERSAL, -points),) if points else ()
    balance = state.balance - points
    applied = AppliedEvent(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=balance,
        liters=liters,
        entries=entries,
        refund_of=original_id,
    )
    # Tier earning is net of reversals, counted on the day the sale earned them.
    earned_by_day = dict(state.earned_by_day)
    if sale_day in earned_by_day:
        earned_by_day[sale_day] -= points
    updated_original = replace(original, refunded_liters=original.refunded_liters + liters)
    # The amount refunded in proportion when the litres were capped.
    amount = refund.amount * liters / refund.liters if refund.liters else Decimal(0)
    refunded = stats.record_refund(state.stats, sale_day, liters, amount, refund.fuel_type)
    new_state = replace(
        state,
        balance=balance,
        applied=state.applied.with_event(original_id, updated_original),
        earned_by_day=earned_by_day,
        lots=held_lots,
        stats=stats.add_points(refunded, -points),
    )
    return new_state, applied


def _reclaimable(state: MemberState, share: int, sale_day: int, program: Program) -> int:
    """What a refund takes back of its ``share``: nothing once the points of the sale's day
    have expired (they are gone already), and never more than the points available (the
    balance less the points held for redemptions), so a refund never makes a balance
    negative."""
    if state.last_daily is not None:
        last_expired_day = date.fromisoformat(state.last_daily).toordinal()
        if sale_day <= last_expired_day - program.expiry_after_days:
            return 0
    return max(0, min(share, state.balance - held_points(state)))


def apply_member_event(
    state: MemberState, event: MemberEvent, program: Program, processed_ms: int
) -> tuple[MemberState, Outcome]:
    """Apply a signup, profile update, newsletter subscription or consent change."""
    fingerprint = content_fingerprint(event)
    previous = state.member_events.get(event.event_id)
    if previous is not None:
        if _conflicts(previous, fingerprint):
            raise RejectedTransaction(
                EVENT_ID_CONFLICT, _conflict_message("event_id", event.event_id)
            )
        return state, Outcome(applied=previous, duplicate=True)

    occurred_s = int(event.occurred_at.timestamp())
    details: dict[str, Any] = {}
    if event.type in (SIGNUP, PROFILE_UPDATED, CONSENTS_CHANGED):
        state = replace(state, profile=_updated_profile(state.profile, event))
    enrolled = event.type == SIGNUP and state.enrolled_at is None
    if enrolled:
        state = _enrol(state, event.occurred_at, event.member_id)
    if event.type == SIGNUP and event.referral_code and not state.referred:
        # Answered by the partition owning the code: see agents/referrals.py.
        code = codes.normalize(event.referral_code)
        details["referral_claim"] = code
        state = replace(state, referred=True, referral_claim=(event.event_id, code))
    if (
        event.type == NEWSLETTER_SUBSCRIBED
        and not state.newsletter_coupon_issued
        and program.newsletter_coupon is not None
    ):
        coupon = wallet.issue(
            event.member_id, "newsletter", event.event_id, program.newsletter_coupon, occurred_s
        )
        state = replace(
            state,
            coupons={**state.coupons, coupon.code: coupon},
            newsletter_coupon_issued=True,
        )
        details["coupon_issued"] = coupon.code

    locale, consent = _audience(state, program)
    applied = AppliedEvent(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=state.balance,
        liters=Decimal(0),
        entries=(),
        enrolled=enrolled,
        details=details,
        fingerprint=fingerprint,
        locale=locale,
        consent=consent,
    )
    day = day_of(occurred_s, program)
    state = _resegment(state, program, day, event.member_id, details, occurred_s, event.event_id)
    keep_from_s = occurred_s - program.refund_window_days * _DAY_S
    member_events = state.member_events.since(keep_from_s).with_event(event.event_id, applied)
    return replace(state, member_events=member_events), Outcome(applied=applied, duplicate=False)


def _updated_profile(profile: Profile, event: MemberEvent) -> Profile:
    """The profile with every field the event carries; absent fields stay as they were."""
    return Profile(
        locale=event.locale if event.locale is not None else profile.locale,
        birth_date=event.birth_date.isoformat() if event.birth_date else profile.birth_date,
        marketing_consent=(
            event.marketing_consent
            if event.marketing_consent is not None
            else profile.marketing_consent
        ),
        email=event.email if event.email is not None else profile.email,
        phone=event.phone if event.phone is not None else profile.phone,
    )


def _daily_key(day: date) -> str:
    """Key of a daily job's outcome among the member's applied member events."""
    return f"daily:{day.isoformat()}"


def apply_daily(
    state: MemberState, day: date, program: Program, processed_ms: int, member_id: str
) -> tuple[MemberState, Outcome | None]:
    """The daily job of ``day`` for one member: birthday bonus, expiry and its notice, tier
    review (downgrades happen only here), segments as of the day (time-driven changes). None
    when there is nothing to do: the job ran for this or a later day already, or the member
    is not enrolled."""
    previous = state.member_events.get(_daily_key(day))
    if previous is not None:
        return state, Outcome(applied=previous, duplicate=True)
    if state.enrolled_at is None or (state.last_daily or "") >= day.isoformat():
        return state, None

    ordinal = day.toordinal()
    entries: list[tuple[str, int]] = []
    details: dict[str, Any] = {}
    birth_date = state.profile.birth_date
    if (
        birth_date
        and program.birthday_bonus_points
        and state.birthday_year != day.year
        and is_birthday(date.fromisoformat(birth_date), day)
    ):
        entries.append((BIRTHDAY_BONUS, program.birthday_bonus_points))
        state = replace(state, birthday_year=day.year)
        state = _credit(state, ordinal, program.birthday_bonus_points, program, details)

    held, expired = lots.expire(state.lots, ordinal - program.expiry_after_days)
    if expired:
        entries.append((EXPIRY, -expired))
    notice_day = ordinal - program.expiry_after_days + program.expiry_notice_days
    expiring = held.get(notice_day, 0) if program.expiry_notice_days else 0
    if expiring:
        expires_on = day + timedelta(days=program.expiry_notice_days)
        details["expiring"] = [expiring, expires_on.isoformat()]

    tier = tier_named(state.tier, program.tiers)
    # Credits of later days (a job run late for a past date) count: a job never judges the
    # tier as of a day before the member's latest earning.
    review_day = tier_as_of_day(ordinal, state.earned_by_day, _last_daily_day(state))
    held_tier = tier_for(
        earned_in_window(state.earned_by_day, review_day, program.tier_window_days), program.tiers
    )
    if held_tier.min_points < tier.min_points:
        details["tier_change"] = [tier.name, held_tier.name]
        state = replace(state, tier=held_tier.name)

    balance = state.balance - expired
    state = replace(state, balance=balance, lots=held, last_daily=day.isoformat())
    start_s = _start_of_day_s(day, program)
    state = _resegment(state, program, ordinal, member_id, details, start_s, _daily_key(day))
    if not entries and not details:
        return state, None
    details["tier"] = tier_named(state.tier, program.tiers).name  # held after the job
    locale, consent = _audience(state, program)
    applied = AppliedEvent(
        occurred_s=start_s,
        processed_ms=processed_ms,
        balance_after=balance,
        liters=Decimal(0),
        entries=tuple(entries),
        details=details,
        locale=locale,
        consent=consent,
    )
    # Older outcomes are pruned like member events (a rerun is refused by last_daily).
    keep_from_s = start_s - program.refund_window_days * _DAY_S
    member_events = state.member_events.since(keep_from_s).with_event(_daily_key(day), applied)
    return replace(state, member_events=member_events), Outcome(applied=applied, duplicate=False)


def _resegment(
    state: MemberState,
    program: Program,
    as_of_day: int,
    member_id: str,
    details: dict[str, Any],
    occurred_s: int,
    source_event_id: str,
) -> MemberState:
    """The member's segments re-evaluated as of ``as_of_day``; the changes are recorded in
    ``details["segments"]``. Entering the win-back segment issues its coupon (recorded in
    ``details["win_back"]``), its code derived from ``source_event_id``.

    A late event is evaluated as of the member's latest day on record (newest sale, last
    daily job) instead: windows never move back in time, so a back-dated sale cannot make a
    member leave a segment that the next daily job would put them back in."""
    newest_sale_day = state.stats.buckets[-1][0] if state.stats.buckets else 0
    last_daily_day = date.fromisoformat(state.last_daily).toordinal() if state.last_daily else 0
    as_of_day = max(as_of_day, newest_sale_day, last_daily_day)
    segments = segments_of(state, program, as_of_day)
    if segments == state.segments:
        return state
    changed = changes(state.segments, segments)
    details["segments"] = changed
    state = replace(state, segments=segments)
    win_back = program.win_back
    if win_back is not None and [win_back.segment, ENTERED] in changed:
        coupon = wallet.issue(member_id, "win_back", source_event_id, win_back.coupon, occurred_s)
        details["win_back"] = coupon.code
        state = replace(state, coupons={**state.coupons, coupon.code: coupon})
    return state


def _start_of_day_s(day: date, program: Program) -> int:
    midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(program.timezone))
    return int(midnight.timestamp())


def _referral_key(outcome: ReferralOutcome) -> str:
    """Key of a referral outcome among the member's applied member events."""
    return f"referral:{outcome.role}:{outcome.signup_event_id}"


def apply_referral_outcome(
    state: MemberState, outcome: ReferralOutcome, program: Program, processed_ms: int
) -> tuple[MemberState, Outcome]:
    """Credit one side of an accepted referral; record a refused one (nothing credited).
    An outcome that answers no claim of this member is refused (``unknown_referral_claim``):
    a referee's must name the signup that typed the code, a referrer's the member's own
    code."""
    key = _referral_key(outcome)
    previous = state.member_events.get(key)
    if previous is not None:
        return state, Outcome(applied=previous, duplicate=True)
    if not _answers_a_claim(state, outcome):
        raise RejectedTransaction(
            UNKNOWN_REFERRAL_CLAIM,
            f"no referral claim of code {outcome.code!r} by signup "
            f"{outcome.signup_event_id!r} matches this {outcome.role} outcome",
        )
    occurred_s = int(outcome.occurred_at.timestamp())
    entries: tuple[tuple[str, int], ...] = ()
    points = program.referrer_points if outcome.role == REFERRER else program.referee_points
    if outcome.status == ACCEPTED and points:
        entries = ((REFERRAL_BONUS, points),)
    details: dict[str, Any] = {
        "referral": {"code": outcome.code, "status": outcome.status, "role": outcome.role}
    }
    credited = sum(delta for _, delta in entries)
    day = day_of(occurred_s, program)
    state = _credit(state, day, credited, program, details)
    state = _resegment(state, program, day, outcome.member_id, details, occurred_s, key)
    details["tier"] = tier_named(state.tier, program.tiers).name  # held after the credit
    locale, consent = _audience(state, program)
    applied = AppliedEvent(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=state.balance,
        liters=Decimal(0),
        entries=entries,
        details=details,
        locale=locale,
        consent=consent,
    )
    new_state = replace(state, member_events=state.member_events.with_event(key, applied))
    return new_state, Outcome(applied=applied, duplicate=False)


def _answers_a_claim(state: MemberState, outcome: ReferralOutcome) -> bool:
    if outcome.role == REFERRER:
        return state.referral_code is not None and state.referral_code == outcome.code
    if state.referral_claim is not None:
        return state.referral_claim == (outcome.signup_event_id, outcome.code)
    # A state stored before claims were recorded: the signup itself, while remembered.
    signup = state.member_events.get(outcome.signup_event_id)
    return signup is not None and signup.details.get("referral_claim") == outcome.code


MAX_REDEMPTIONS = 50
"""Redemption records kept per member beyond the pending and granted ones: rejected and
cancelled ones are let go oldest first (the coordinator keeps every request's outcome)."""
_COUNTED = (saga.HELD, *saga.GRANTED)
"""Statuses that count towards a reward's per-member limit."""


def held_points(state: MemberState) -> int:
    """Points set aside for redemptions waiting for their stock."""
    return sum(r.points for r in state.redemptions.values() if r.status == saga.HELD)


def apply_redemption_step(
    state: MemberState, step: RedemptionStep, program: Program, processed_ms: int
) -> tuple[MemberState, Outcome]:
    """One step of a redemption at the member's partition (``core.saga``):

    - ``hold``: set the points aside if the available balance (balance less held points)
      covers them and the reward's per-member limit allows; else reject;
    - ``confirm``: debit the held points (ledger ``redemption``);
    - ``reject``: release them (the coordinator found no stock, or no such reward);
    - ``fulfilled``: the station delivered;
    - ``cancel``: credit the points back (ledger ``redemption_refund``).

    Idempotent by (request, step): a repeated step returns the stored outcome. Every step
    but ``hold`` must match the member's record of the request (same reward, quantity and
    points), else it is refused (``unknown_hold``); only the coordinator's rejection of an
    unknown or inactive reward comes with no hold before it."""
    key = f"redemption:{step.request_id}:{step.step}"
    previous = state.member_events.get(key)
    if previous is not None:
        return state, Outcome(applied=previous, duplicate=True)
    record = state.redemptions.get(step.request_id)
    if step.step != saga.HOLD and not _matches_hold(record, step):
        raise RejectedTransaction(
            UNKNOWN_HOLD,
            f"no hold of request {step.request_id!r} for {step.quantity} x {step.reward_id!r} "
            f"at {step.points} points matches this {step.step} step",
        )
    occurred_s = int(step.occurred_at.timestamp())
    at = step.occurred_at.isoformat()
    entries: tuple[tuple[str, int], ...] = ()
    balance, held_lots = state.balance, state.lots
    changed = True
    if step.step == saga.HOLD and record is None:
        reason = _hold_refusal(state, step)
        status = saga.HELD if reason is None else saga.REJECTED
        record = Redemption(
            step.reward_id,
            step.quantity,
            step.points,
            status,
            reason,
            step.station_id,
            step.requested_at,
            at,
        )
    elif step.step == saga.CONFIRM and record is not None and record.status == saga.HELD:
        entries = ((REDEMPTION, -record.points),)
        balance -= record.points
        held_lots = lots.debit(state.lots, record.points)
        record = replace(record, status=saga.CONFIRMED, updated_at=at)
    elif step.step == saga.REJECT and (record is None or record.status == saga.HELD):
        record = Redemption(
            step.reward_id,
            step.quantity,
            step.points,
            saga.REJECTED,
            step.reason,
            step.station_id,
            step.requested_at,
            at,
        )
    elif step.step == FULFILLED and record is not None and record.status == saga.CONFIRMED:
        record = replace(record, status=FULFILLED, updated_at=at)
    elif step.step == saga.CANCEL and record is not None and record.status in saga.GRANTED:
        entries = ((REDEMPTION_REFUND, record.points),)
        balance += record.points
        held_lots = lots.credit(state.lots, day_of(occurred_s, program), record.points)
        record = replace(record, status=CANCELLED, updated_at=at)
    else:
        changed = False  # nothing to do at this status (the coordinator re-sent a step)
    details: dict[str, Any] = {}
    if record is not None:
        details["redemption"] = {
            "request_id": step.request_id,
            "reward_id": record.reward_id,
            "quantity": record.quantity,
            "points": record.points,
            "status": record.status,
            "reason": record.reason,
            "step": step.step,
        }
    if record is not None and changed:
        records = _bounded_redemptions({**state.redemptions, step.request_id: record})
        state = replace(state, redemptions=records, balance=balance, lots=held_lots)
    elif record is not None:
        details["unchanged"] = True
    locale, consent = _audience(state, program)
    applied = AppliedEvent(
        occurred_s=occurred_s,
        processed_ms=processed_ms,
        balance_after=state.balance,
        liters=Decimal(0),
        entries=entries,
        details=details,
        locale=locale,
        consent=consent,
    )
    keep_from_s = occurred_s - program.refund_window_days * _DAY_S
    member_events = state.member_events.since(keep_from_s).with_event(key, applied)
    return replace(state, member_events=member_events), Outcome(applied=applied, duplicate=False)


def _matches_hold(record: Redemption | None, step: RedemptionStep) -> bool:
    if record is None:
        return step.step == saga.REJECT and step.reason in (
            saga.UNKNOWN_REWARD,
            saga.INACTIVE_REWARD,
        )
    return (record.reward_id, record.quantity, record.points) == (
        step.reward_id,
        step.quantity,
        step.points,
    )


def _hold_refusal(state: MemberState, step: RedemptionStep) -> str | None:
    if step.per_member_limit is not None:
        granted = sum(
            r.quantity
            for r in state.redemptions.values()
            if r.reward_id == step.reward_id and r.status in _COUNTED
        )
        if granted + step.quantity > step.per_member_limit:
            return saga.LIMIT_REACHED
    if state.balance - held_points(state) < step.points:
        return saga.INSUFFICIENT_POINTS
    return None


def _bounded_redemptions(records: dict[str, Redemption]) -> dict[str, Redemption]:
    excess = len(records) - MAX_REDEMPTIONS
    if excess <= 0:
        return records
    kept = {}
    for request_id, record in records.items():
        if excess > 0 and record.status in (saga.REJECTED, CANCELLED):
            excess -= 1
            continue
        kept[request_id] = record
    return kept


def remember_ledger(state: MemberState, entries: Sequence[LedgerEntry]) -> MemberState:
    """The state with ``entries`` added to its recent ledger (the last ``LEDGER_HISTORY``)."""
    if not entries:
        return state
    added = [
        [
            entry.entry_id,
            entry.delta,
            entry.balance_after,
            entry.reason,
            entry.source_event_id,
            entry.program_version,
            entry.occurred_at,
            entry.processed_at,
        ]
        for entry in entries
    ]
    return replace(state, recent_ledger=(*state.recent_ledger, *added)[-LEDGER_HISTORY:])


def erased_key(member_key: bytes) -> bytes:
    """What the engine keeps of an erased member: a hash that refuses their later events."""
    return hashlib.sha256(b"erased\x1f" + member_key).digest()
