"""The coupon wallet: pure issue and redeem transitions over a member's coupons."""

from __future__ import annotations

from dataclasses import replace

from loyalty.core import codes
from loyalty.core.program import CouponOffer
from loyalty.schemas.state import Coupon

REDEEMED = "redeemed"
UNKNOWN_COUPON = "unknown_coupon"
EXPIRED_COUPON = "expired_coupon"
COUPON_USED = "coupon_used"
NOT_OWNER = "not_owner"

_DAY_S = 86_400


def issue(
    owner_id: str, source: str, source_event_id: str, offer: CouponOffer, now_s: int
) -> Coupon:
    """A new coupon for ``owner_id``; the code is derived from the event that earned it."""
    return Coupon(
        code=codes.coupon_code(owner_id, source_event_id),
        benefit=offer.benefit,
        value=offer.value,
        source=source,
        issued_s=now_s,
        expires_s=now_s + offer.valid_days * _DAY_S,
    )


def redeem(
    wallet: dict[str, Coupon], presented: str, member_id: str, transaction_id: str, now_s: int
) -> tuple[str, Coupon | None]:
    """Status of a code presented on a sale, and the coupon marked used when redeemed."""
    code = codes.normalize(presented)
    coupon = wallet.get(code)
    if coupon is None:
        well_formed = codes.is_well_formed_coupon(code)
        if well_formed and not code.startswith(codes.owner_tag(member_id)):
            return NOT_OWNER, None
        return UNKNOWN_COUPON, None
    if coupon.used_by is not None:
        return COUPON_USED, None
    if now_s >= coupon.expires_s:
        return EXPIRED_COUPON, None
    return REDEEMED, replace(coupon, used_by=transaction_id)
