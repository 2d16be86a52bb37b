"""Points lots: unspent points by the day they were earned, for expiry (oldest first)."""

from __future__ import annotations


def credit(lots: dict[int, int], day: int, points: int) -> dict[int, int]:
    if points <= 0:
        return lots
    return {**lots, day: lots.get(day, 0) + points}


def debit(lots: dict[int, int], points: int) -> dict[int, int]:
    """Spend ``points`` from the oldest lots first; more than is left empties them."""
    remaining = dict(lots)
    for day in sorted(remaining):
        if points <= 0:
            break
        taken = min(points, remaining[day])
        remaining[day] -= taken
        points -= taken
        if remaining[day] == 0:
            del remaining[day]
    return remaining


def take_back(lots: dict[int, int], day: int, points: int) -> tuple[dict[int, int], int]:
    """Take back up to ``points`` of a credit earned on ``day`` (a refund): from that day's
    lot first, then from the oldest lots; return what is left and the points taken (at most
    what the lots hold)."""
    own = min(points, lots.get(day, 0))
    remaining = dict(lots)
    if own:
        remaining[day] -= own
        if remaining[day] == 0:
            del remaining[day]
    before = sum(remaining.values())
    remaining = debit(remaining, points - own)
    return remaining, own + before - sum(remaining.values())


def expire(lots: dict[int, int], last_expired_day: int) -> tuple[dict[int, int], int]:
    """Drop the lots earned on or before ``last_expired_day``; return what is left and the
    points that expired."""
    kept = {day: points for day, points in lots.items() if day > last_expired_day}
    return kept, sum(points for day, points in lots.items() if day <= last_expired_day)
