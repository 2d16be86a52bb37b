"""Pure views of a member for the profile API (``GET /members/{id}`` and its ledger).

Figures that depend on the day (points to the next tier, active coupons, rolling stats,
RFM) are computed as of ``now_ms``, the wall clock at the API edge, injected. Segments are
the member's as last evaluated, so they match the events on ``loyalty.segments``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from loyalty.core.accounts import LEDGER_HISTORY
from loyalty.core.program import Program
from loyalty.core.render import iso_from_ms
from loyalty.core.rules import earned_in_window, tier_named
from loyalty.core.segments import rfm_scores
from loyalty.core.stats import figures
from loyalty.schemas.state import MemberState

DEFAULT_LEDGER_LIMIT = 20
MAX_LEDGER_LIMIT = LEDGER_HISTORY

_LEDGER_FIELDS = (
    "entry_id",
    "delta",
    "balance_after",
    "reason",
    "source_event_id",
    "program_version",
    "occurred_at",
    "processed_at",
)


def is_known(state: MemberState) -> bool:
    """True once the member has enrolled or has anything on record."""
    return state.enrolled_at is not None or bool(state.applied) or bool(state.member_events)


def member_profile(
    member_id: str, state: MemberState, program: Program, now_ms: int
) -> dict[str, Any]:
    """The member as the profile API shows it."""
    zone = ZoneInfo(program.timezone)
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    now_s = now_ms // 1000
    tier = tier_named(state.tier, program.tiers)
    higher = [level for level in program.tiers if level.min_points > tier.min_points]
    earned = earned_in_window(state.earned_by_day, today.toordinal(), program.tier_window_days)
    next_tier = higher[0] if higher else None
    stats = figures(state.stats, today.toordinal())
    return {
        "member_id": member_id,
        "as_of": today.isoformat(),
        "balance": state.balance,
        "tier": tier.name,
        "next_tier": next_tier.name if next_tier else None,
        "points_to_next_tier": max(0, next_tier.min_points - earned) if next_tier else None,
        "referral_code": state.referral_code,
        "enrolled_at": state.enrolled_at,
        "stats": stats,
        "rfm": rfm_scores(stats, program.rfm),
        # As last evaluated: at the member's last event, or by the last daily job.
        "segments": list(state.segments),
        "active_coupons": [
            {
                "code": coupon.code,
                "benefit": coupon.benefit,
                "value": coupon.value,
                "source": coupon.source,
                "issued_at": iso_from_ms(coupon.issued_s * 1000),
                "expires_at": iso_from_ms(coupon.expires_s * 1000),
            }
            for coupon in state.coupons.values()
            if coupon.used_by is None and now_s < coupon.expires_s
        ],
    }


def recent_ledger(member_id: str, state: MemberState, limit: int) -> list[dict[str, Any]]:
    """The member's ``limit`` most recent ledger entries, newest first, as the ledger topic
    carries them."""
    newest_first = reversed(state.recent_ledger[-limit:]) if limit > 0 else ()
    return [
        {"member_id": member_id, **dict(zip(_LEDGER_FIELDS, stored, strict=True))}
        for stored in newest_first
    ]
