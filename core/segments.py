"""RFM scores and segment membership: pure functions of a member's state and a day.

A member's segments are re-evaluated after every event that changes their state, as of
the event's day (sale-driven changes), and by the daily job, as of its day (time-driven
changes: ``lapsed_30d`` is entered there).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from decimal import Decimal
from typing import Any

from loyalty.core.program import Program, Rfm
from loyalty.core.rules import tier_named
from loyalty.core.stats import DAYPARTS, figures
from loyalty.schemas.state import MemberState

ENTERED = "entered"
LEFT = "left"


def rfm_scores(stats: dict[str, Any], rfm: Rfm | None) -> dict[str, Any]:
    """Recency, frequency and monetary scores, 1 (worst) to 5 (best), and the three as one
    ``score`` (e.g. ``"534"``); all None before the first sale or without thresholds."""
    if rfm is None or stats["days_since_last_sale"] is None:
        return {"recency": None, "frequency": None, "monetary": None, "score": None}
    recency = 5 - bisect_left(rfm.recency_days, stats["days_since_last_sale"])
    frequency = 1 + bisect_right(rfm.frequency_sales_90d, stats["sales_90d"])
    monetary = 1 + bisect_right(rfm.monetary_amount_90d, Decimal(str(stats["amount_90d"])))
    return {
        "recency": recency,
        "frequency": frequency,
        "monetary": monetary,
        "score": f"{recency}{frequency}{monetary}",
    }


def predicate_fields(
    state: MemberState, program: Program, stats: dict[str, Any], rfm: dict[str, Any]
) -> dict[str, Any]:
    """What segment predicates read (``core.predicates.FIELDS``)."""
    shares = stats["daypart_shares_30d"]
    return {
        **stats,
        **{f"{name}_share_30d": shares[name] for name in DAYPARTS},
        "balance": state.balance,
        "tier": tier_named(state.tier, program.tiers).name,
        "locale": state.profile.locale,
        "marketing_consent": state.profile.marketing_consent,
        "rfm_recency": rfm["recency"],
        "rfm_frequency": rfm["frequency"],
        "rfm_monetary": rfm["monetary"],
    }


def segments_of(state: MemberState, program: Program, as_of_day: int) -> tuple[str, ...]:
    """Names of the program's segments the member is in as of ``as_of_day``, sorted."""
    if not program.segments:
        return ()
    stats = figures(state.stats, as_of_day)
    fields = predicate_fields(state, program, stats, rfm_scores(stats, program.rfm))
    return tuple(sorted(segment.name for segment in program.segments if segment.matches(fields)))


def changes(before: tuple[str, ...], after: tuple[str, ...]) -> list[list[str]]:
    """``[segment, "left"|"entered"]`` pairs: the segments left, then those entered."""
    return [[name, LEFT] for name in before if name not in after] + [
        [name, ENTERED] for name in after if name not in before
    ]
