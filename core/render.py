"""Pure rendering of the output events of one applied input event.

Outputs are a function of the input event and its stored outcome (with the locale, marketing
consent and tier recorded when it was applied), so a redelivered event re-emits the same
records, byte for byte, whatever the member changed since; only the program file and what a
coupon or referral code names are read from the current program and state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from loyalty.core import saga as saga_steps
from loyalty.core.ids import derive_id
from loyalty.core.program import Program
from loyalty.core.rules import fuel_points, tier_named
from loyalty.core.saga import Step
from loyalty.schemas.events import (
    SALE,
    MemberEvent,
    RedemptionStep,
    ReferralOutcome,
    Transaction,
)
from loyalty.schemas.outputs import (
    BIRTHDAY_BONUS,
    EXPIRY,
    FUEL_POINTS,
    Bonus,
    Breakdown,
    LedgerEntry,
    Multiplier,
    Notification,
    RewardEvent,
    SegmentChange,
)
from loyalty.schemas.state import AppliedEvent, Coupon, MemberState

TRANSACTION_SOURCE = "transaction"
MEMBER_EVENT_SOURCE = "member_event"

WELCOME = "welcome"
POINTS_EARNED = "points_earned"
POINTS_REVERSED = "points_reversed"
COUPON_ISSUED = "coupon_issued"
TIER_CHANGED = "tier_changed"
MISSION_COMPLETED = "mission_completed"
BIRTHDAY = "birthday"
POINTS_EXPIRING = "points_expiring"
POINTS_EXPIRED = "points_expired"
DAILY_SOURCE = "daily"
REFERRAL_SOURCE = "referral"
REFERRAL_BONUS_KIND = "referral_bonus"
WIN_BACK = "win_back"
REDEMPTION_SOURCE = "redemption"
REDEMPTION_CONFIRMED = "redemption_confirmed"
REDEMPTION_REJECTED = "redemption_rejected"
REDEMPTION_CANCELLED = "redemption_cancelled"
_REDEMPTION_NOTICES = {
    saga_steps.CONFIRMED: REDEMPTION_CONFIRMED,
    saga_steps.REJECTED: REDEMPTION_REJECTED,
    saga_steps.CANCELLED: REDEMPTION_CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Outputs:
    ledger: list[LedgerEntry]
    reward: RewardEvent | None
    """None for a step with nothing to report (a redemption's points set aside)."""
    notifications: list[Notification]
    referral_ops: list[dict[str, Any]] = field(default_factory=list)
    """Messages for the referral-code registry (topic ``loyalty.referrals``, key ``code``)."""
    segments: list[SegmentChange] = field(default_factory=list)
    saga: list[Step] = field(default_factory=list)
    """Messages of the redemption saga (``core.saga``)."""


def referral_ops(
    member_id: str, applied: AppliedEvent, state: MemberState, signup: MemberEvent | None = None
) -> list[dict[str, Any]]:
    """Register the code of a member this event enrolled; claim the code a signup typed."""
    ops: list[dict[str, Any]] = []
    if applied.enrolled and state.referral_code:
        ops.append({"op": "register", "code": state.referral_code, "member_id": member_id})
    claim = applied.details.get("referral_claim")
    if claim and signup is not None:
        ops.append(
            {
                "op": "claim",
                "code": claim,
                "member_id": member_id,
                "signup_event_id": signup.event_id,
                "occurred_at": signup.occurred_at.isoformat(),
            }
        )
    return ops


def iso_from_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def render_transaction(
    transaction: Transaction, applied: AppliedEvent, state: MemberState, program: Program
) -> Outputs:
    """Ledger entries, reward event and notifications of one applied sale or refund."""
    source_id = transaction.transaction_id
    occurred_at = transaction.occurred_at.isoformat()
    ledger = _ledger(
        TRANSACTION_SOURCE, source_id, transaction.member_id, applied, program, occurred_at
    )
    points = sum(delta for _, delta in applied.entries)
    is_sale = transaction.type == SALE
    details = applied.details
    reward = _reward(
        TRANSACTION_SOURCE,
        source_id,
        transaction.member_id,
        transaction.type,
        occurred_at,
        applied,
        program,
        station_id=transaction.station_id,
        breakdown=_breakdown(transaction, applied, program) if is_sale else None,
        reversal=None
        if is_sale
        else {
            "original_transaction_id": applied.refund_of,
            "requested_liters": float(transaction.liters),
            "refunded_liters": float(applied.liters),
        },
        tier=details.get("tier"),
        tier_change=_tier_change(details),
        coupons=details.get("coupons"),
        missions=details.get("missions"),
    )

    figures = {
        "balance": applied.balance_after,
        "liters": float(transaction.liters),
        "station_id": transaction.station_id,
    }
    messages: list[tuple[str, dict[str, Any]]] = []
    if applied.enrolled:
        messages.append((WELCOME, _welcome_data(applied, state)))
    if points:
        kind = POINTS_EARNED if points > 0 else POINTS_REVERSED
        messages.append((kind, {**figures, "points": abs(points)}))
    for mission in details.get("missions", []):
        # A mission since removed from the program (a replay after a change) shows 0.
        bonus = next((m.bonus_points for m in program.missions if m.id == mission), 0)
        messages.append((MISSION_COMPLETED, {**figures, "mission": mission, "points": bonus}))
    if "tier_change" in details:
        previous, tier = details["tier_change"]
        messages.append((TIER_CHANGED, {**figures, "tier": tier, "previous_tier": previous}))
    messages += _win_back_messages(applied, state, program)
    notifications = _notifications(
        TRANSACTION_SOURCE,
        source_id,
        occurred_at,
        messages,
        _audience(applied, state, program),
        program,
        transaction.member_id,
    )
    ops = referral_ops(transaction.member_id, applied, state)
    segments = _segment_changes(
        TRANSACTION_SOURCE, source_id, transaction.member_id, occurred_at, applied, program
    )
    return Outputs(ledger, reward, notifications, ops, segments)


def render_member_event(
    event: MemberEvent, applied: AppliedEvent, state: MemberState, program: Program
) -> Outputs:
    """Reward event and notifications of one applied member event."""
    occurred_at = event.occurred_at.isoformat()
    details = applied.details
    coupon = state.coupons.get(details.get("coupon_issued", ""))
    win_back = state.coupons.get(details.get("win_back", ""))
    reward = _reward(
        MEMBER_EVENT_SOURCE,
        event.event_id,
        event.member_id,
        event.type,
        occurred_at,
        applied,
        program,
        coupon_issued=_issued(coupon or win_back),
    )
    messages: list[tuple[str, dict[str, Any]]] = []
    if applied.enrolled:
        messages.append((WELCOME, _welcome_data(applied, state)))
    if coupon is not None:
        expires_on = datetime.fromtimestamp(coupon.expires_s, ZoneInfo(program.timezone))
        messages.append(
            (
                COUPON_ISSUED,
                {
                    "code": coupon.code,
                    "benefit": coupon.benefit,
                    "value": coupon.value,
                    "expires_on": expires_on.date().isoformat(),
                },
            )
        )
    messages += _win_back_messages(applied, state, program)
    notifications = _notifications(
        MEMBER_EVENT_SOURCE,
        event.event_id,
        occurred_at,
        messages,
        _audience(applied, state, program),
        program,
        event.member_id,
    )
    ledger = _ledger(
        MEMBER_EVENT_SOURCE, event.event_id, event.member_id, applied, program, occurred_at
    )
    ops = referral_ops(event.member_id, applied, state, event)
    segments = _segment_changes(
        MEMBER_EVENT_SOURCE, event.event_id, event.member_id, occurred_at, applied, program
    )
    return Outputs(ledger, reward, notifications, ops, segments)


def render_referral(
    outcome: ReferralOutcome, applied: AppliedEvent, state: MemberState, program: Program
) -> Outputs:
    """Ledger entry, reward event and notification of one side of a referral."""
    source_id = outcome.signup_event_id
    scope = (outcome.role,)
    occurred_at = outcome.occurred_at.isoformat()
    points = sum(delta for _, delta in applied.entries)
    reward = _reward(
        REFERRAL_SOURCE,
        source_id,
        outcome.member_id,
        REFERRAL_SOURCE,
        occurred_at,
        applied,
        program,
        scope,
        tier=_tier_held(applied, state, program),
        tier_change=_tier_change(applied.details),
        referral=applied.details.get("referral"),
        coupon_issued=_issued(state.coupons.get(applied.details.get("win_back", ""))),
    )
    messages: list[tuple[str, dict[str, Any]]] = []
    if points:
        data = {"points": points, "balance": applied.balance_after, "code": outcome.code}
        messages.append((REFERRAL_BONUS_KIND, data))
    if "tier_change" in applied.details:
        previous, tier = applied.details["tier_change"]
        data = {"balance": applied.balance_after, "tier": tier, "previous_tier": previous}
        messages.append((TIER_CHANGED, data))
    messages += _win_back_messages(applied, state, program)
    ledger = _ledger(
        REFERRAL_SOURCE, source_id, outcome.member_id, applied, program, occurred_at, scope
    )
    notifications = _notifications(
        REFERRAL_SOURCE,
        source_id,
        occurred_at,
        messages,
        _audience(applied, state, program),
        program,
        outcome.member_id,
        scope,
    )
    segments = _segment_changes(
        REFERRAL_SOURCE, source_id, outcome.member_id, occurred_at, applied, program, scope
    )
    return Outputs(ledger, reward, notifications, segments=segments)


def render_redemption(
    step: RedemptionStep, applied: AppliedEvent, state: MemberState, program: Program
) -> Outputs:
    """Ledger entry, reward event, notification and saga reply of one redemption step at
    the member's partition. Points set aside (``hold`` accepted) only reply."""
    redemption = applied.details.get("redemption")
    replies = []
    if step.step == saga_steps.HOLD and redemption is not None:
        refused = redemption["status"] == saga_steps.REJECTED
        outcome = saga_steps.REFUSED if refused else saga_steps.HELD
        at = step.occurred_at.isoformat()
        replies.append(saga_steps.reply(step.request_id, outcome, at, redemption["reason"]))
        if not refused:
            return Outputs([], None, [], saga=replies)
    if redemption is None or applied.details.get("unchanged"):
        return Outputs([], None, [], saga=replies)  # a step that found nothing to change
    scope = (step.step,)
    occurred_at = step.occurred_at.isoformat()
    shown = {key: redemption[key] for key in redemption if key != "step"}
    reward = _reward(
        REDEMPTION_SOURCE,
        step.request_id,
        step.member_id,
        REDEMPTION_SOURCE,
        occurred_at,
        applied,
        program,
        scope,
        station_id=step.station_id,
        redemption=shown,
    )
    ledger = _ledger(
        REDEMPTION_SOURCE, step.request_id, step.member_id, applied, program, occurred_at, scope
    )
    messages: list[tuple[str, dict[str, Any]]] = []
    kind = _REDEMPTION_NOTICES.get(redemption["status"])
    if kind is not None:
        names = step.reward_name or {}
        locale = _audience(applied, state, program)[0]
        name = names.get(locale) or names.get(locale.split("-")[0]) or names.get("en")
        reason = redemption["reason"]
        words = program.reason_texts
        texts = words.get(locale) or words.get(locale.split("-")[0]) or words.get("en", {})
        data = {
            **shown,
            "reward": name or redemption["reward_id"],
            "reason_text": None if reason is None else texts.get(reason, reason),
            "balance": applied.balance_after,
        }
        messages.append((kind, data))
    notifications = _notifications(
        REDEMPTION_SOURCE,
        step.request_id,
        occurred_at,
        messages,
        _audience(applied, state, program),
        program,
        step.member_id,
        scope,
    )
    return Outputs(ledger, reward, notifications, saga=replies)


def render_daily(
    member_id: str, day: date, applied: AppliedEvent, state: MemberState, program: Program
) -> Outputs:
    """Ledger entries, reward event and notifications of one member's daily job."""
    source_id = f"daily:{day.isoformat()}"
    scope = (member_id,)
    occurred_at = iso_from_ms(applied.occurred_s * 1000)
    details = applied.details
    reward = _reward(
        DAILY_SOURCE,
        source_id,
        member_id,
        DAILY_SOURCE,
        occurred_at,
        applied,
        program,
        scope,
        tier=_tier_held(applied, state, program),
        tier_change=_tier_change(details),
        coupon_issued=_issued(state.coupons.get(details.get("win_back", ""))),
    )
    balance = {"balance": applied.balance_after}
    messages: list[tuple[str, dict[str, Any]]] = []
    for reason, delta in applied.entries:
        if reason == BIRTHDAY_BONUS:
            messages.append((BIRTHDAY, {**balance, "points": delta}))
        elif reason == EXPIRY:
            messages.append((POINTS_EXPIRED, {**balance, "points": -delta}))
    if "expiring" in details:
        expiring, expires_on = details["expiring"]
        messages.append(
            (POINTS_EXPIRING, {**balance, "points": expiring, "expires_on": expires_on})
        )
    if "tier_change" in details:
        previous, tier = details["tier_change"]
        messages.append((TIER_CHANGED, {**balance, "tier": tier, "previous_tier": previous}))
    messages += _win_back_messages(applied, state, program)
    ledger = _ledger(DAILY_SOURCE, source_id, member_id, applied, program, occurred_at, scope)
    audience = _audience(applied, state, program)
    notifications = _notifications(
        DAILY_SOURCE, source_id, occurred_at, messages, audience, program, member_id, scope
    )
    segments = _segment_changes(
        DAILY_SOURCE, source_id, member_id, occurred_at, applied, program, scope
    )
    return Outputs(ledger, reward, notifications, segments=segments)


def _reward(
    source_kind: str,
    source_id: str,
    member_id: str,
    source_type: str,
    occurred_at: str,
    applied: AppliedEvent,
    program: Program,
    id_scope: tuple[str, ...] = (),
    **fields: Any,
) -> RewardEvent:
    """The reward event of one applied event; ``fields`` are the kind-specific ones."""
    return RewardEvent(
        reward_id=derive_id(source_kind, source_id, *id_scope, "reward"),
        member_id=member_id,
        source_event_id=source_id,
        source_type=source_type,
        station_id=fields.pop("station_id", None),
        occurred_at=occurred_at,
        processed_at=iso_from_ms(applied.processed_ms),
        program_version=program.version,
        points=sum(delta for _, delta in applied.entries),
        balance_after=applied.balance_after,
        enrolled=applied.enrolled,
        **fields,
    )


def _ledger(
    source_kind: str,
    source_id: str,
    member_id: str,
    applied: AppliedEvent,
    program: Program,
    occurred_at: str,
    id_scope: tuple[str, ...] = (),
) -> list[LedgerEntry]:
    points = sum(delta for _, delta in applied.entries)
    balance = applied.balance_after - points
    processed_at = iso_from_ms(applied.processed_ms)
    seen: dict[str, int] = {}
    ledger = []
    for reason, delta in applied.entries:
        balance += delta
        # A reason can repeat within one event (two missions): number the repeats.
        repeat = seen.get(reason, 0)
        seen[reason] = repeat + 1
        suffix = (reason,) if repeat == 0 else (reason, str(repeat))
        ledger.append(
            LedgerEntry(
                entry_id=derive_id(source_kind, source_id, *id_scope, "ledger", *suffix),
                member_id=member_id,
                delta=delta,
                balance_after=balance,
                reason=reason,
                source_event_id=source_id,
                program_version=program.version,
                occurred_at=occurred_at,
                processed_at=processed_at,
            )
        )
    return ledger


def _welcome_data(applied: AppliedEvent, state: MemberState) -> dict[str, Any]:
    return {
        "points": applied.balance_after,
        "balance": applied.balance_after,
        "referral_code": state.referral_code,
    }


def _issued(coupon: Coupon | None) -> dict[str, Any] | None:
    if coupon is None:
        return None
    return {
        "code": coupon.code,
        "benefit": coupon.benefit,
        "value": coupon.value,
        "expires_at": iso_from_ms(coupon.expires_s * 1000),
    }


def _segment_changes(
    source_kind: str,
    source_id: str,
    member_id: str,
    occurred_at: str,
    applied: AppliedEvent,
    program: Program,
    id_scope: tuple[str, ...] = (),
) -> list[SegmentChange]:
    return [
        SegmentChange(
            segment_event_id=derive_id(
                source_kind, source_id, *id_scope, "segment", segment, change
            ),
            member_id=member_id,
            segment=segment,
            change=change,
            occurred_at=occurred_at,
            source_event_id=source_id,
            program_version=program.version,
        )
        for segment, change in applied.details.get("segments", ())
    ]


def _win_back_messages(
    applied: AppliedEvent, state: MemberState, program: Program
) -> list[tuple[str, dict[str, Any]]]:
    """The win_back notification with the coupon issued on entering the win-back segment."""
    coupon = state.coupons.get(applied.details.get("win_back", ""))
    if coupon is None:
        return []
    expires_on = datetime.fromtimestamp(coupon.expires_s, ZoneInfo(program.timezone))
    data = {
        "code": coupon.code,
        "benefit": coupon.benefit,
        "value": coupon.value,
        "expires_on": expires_on.date().isoformat(),
        "balance": applied.balance_after,
    }
    return [(WIN_BACK, data)]


def _tier_change(details: dict[str, Any]) -> dict[str, str] | None:
    change = details.get("tier_change")
    return None if change is None else {"from": change[0], "to": change[1]}


def _audience(applied: AppliedEvent, state: MemberState, program: Program) -> tuple[str, bool]:
    """The locale the notifications are wanted in and the marketing consent, as recorded
    when the event was applied (the member's current ones for an outcome stored before
    they were recorded)."""
    if applied.locale is not None and applied.consent is not None:
        return applied.locale, applied.consent
    return state.profile.locale or program.default_locale, state.profile.marketing_consent


def _tier_held(applied: AppliedEvent, state: MemberState, program: Program) -> str:
    """The tier held after a daily job or a referral credit, as recorded."""
    recorded = applied.details.get("tier")
    return recorded if recorded is not None else tier_named(state.tier, program.tiers).name


def _notifications(
    source_kind: str,
    source_id: str,
    occurred_at: str,
    messages: list[tuple[str, dict[str, Any]]],
    audience: tuple[str, bool],
    program: Program,
    member_id: str,
    id_scope: tuple[str, ...] = (),
) -> list[Notification]:
    """The notifications of ``messages`` for the ``audience`` (wanted locale, marketing
    consent) of the event."""
    wanted, consent = audience
    notifications = []
    seen: dict[str, int] = {}
    for kind, data in messages:
        if kind in program.marketing_kinds and not consent:
            continue
        locale, title, body = _render(kind, wanted, data, program)
        # A kind can repeat within one event (two missions): number the repeats.
        repeat = seen.get(kind, 0)
        seen[kind] = repeat + 1
        suffix = (kind,) if repeat == 0 else (kind, str(repeat))
        notifications.append(
            Notification(
                notification_id=derive_id(
                    source_kind, source_id, *id_scope, "notification", *suffix
                ),
                member_id=member_id,
                kind=kind,
                locale=locale,
                occurred_at=occurred_at,
                data=data,
                title=title,
                body=body,
            )
        )
    return notifications


def _render(kind: str, wanted: str, data: dict[str, Any], program: Program) -> tuple[str, str, str]:
    """(locale actually used, title, body): the member's locale, its language, else en."""
    by_locale = (program.templates or {}).get(kind, {})
    for locale in (wanted, wanted.split("-")[0], "en"):
        template = by_locale.get(locale)
        if template is not None:
            return locale, template.title.format_map(data), template.body.format_map(data)
    return wanted, kind, ""


def _breakdown(sale: Transaction, applied: AppliedEvent, program: Program) -> Breakdown:
    tier = tier_named(applied.details.get("tier"), program.tiers)
    earned = fuel_points(sale.liters, program.fuel_points, tier)
    return Breakdown(
        liters=float(sale.liters),
        points_per_liter=float(program.fuel_points.points_per_liter),
        base_points=earned.base_points,
        multipliers=[Multiplier(name, float(factor)) for name, factor in earned.multipliers],
        fuel_points=sum(delta for reason, delta in applied.entries if reason == FUEL_POINTS),
        bonuses=[
            Bonus(reason, delta) for reason, delta in applied.entries if reason != FUEL_POINTS
        ],
    )


def render_erasure(event: MemberEvent, now_ms: int, program: Program) -> RewardEvent:
    """The erase's own reward event: the last output naming the member, for downstream
    services to erase their copies too."""
    return RewardEvent(
        reward_id=derive_id(MEMBER_EVENT_SOURCE, event.event_id, "reward"),
        member_id=event.member_id,
        source_event_id=event.event_id,
        source_type=event.type,
        station_id=None,
        occurred_at=event.occurred_at.isoformat(),
        processed_at=iso_from_ms(now_ms),
        program_version=program.version,
        points=0,
        balance_after=0,
        enrolled=False,
    )
