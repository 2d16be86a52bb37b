"""Rolling consumption stats of a member: day buckets in the member's own table value.

Faust's windowed tables are not persisted by the RocksDB store, so the windows are kept
here: one bucket per calendar day with a sale (program time zone), dropped once older than
the longest window (90 days), so a member's stats stay bounded however long they buy. The
figures of any trailing window ending on a given day are sums over the buckets. Litres are
kept in millilitres and amounts in cents, so the sums are exact.

A stored bucket is ``[day, ml, cents, sales, morning, midday, evening, night, {fuel: ml},
{station: [sales, last sale time]}]`` (day: date ordinal; dayparts: sales counts).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schemas.state import Bucket, Stats

LONGEST_WINDOW_DAYS = 90
DAYPARTS = ("morning", "midday", "evening", "night")

_DAY, _ML, _CENTS, _SALES, _DAYPART0, _FUELS, _STATIONS = 0, 1, 2, 3, 4, 8, 9


def daypart(hour: int) -> int:
    """Index in ``DAYPARTS``: morning 06-11, midday 11-16, evening 16-22, night 22-06."""
    if 6 <= hour < 11:
        return 0
    if 11 <= hour < 16:
        return 1
    if 16 <= hour < 22:
        return 2
    return 3


def milli(value: Decimal) -> int:
    return int((value * 1000).to_integral_value())


def cents(value: Decimal) -> int:
    return int((value * 100).to_integral_value())


def record_sale(
    stats: Stats,
    day: int,
    hour: int,
    occurred_s: int,
    liters: Decimal,
    amount: Decimal,
    fuel: str,
    station: str,
) -> Stats:
    """The stats with one more sale, on ``day`` (ordinal) at ``hour`` (program time zone)."""
    ml, cts = milli(liters), cents(amount)
    buckets = [bucket for bucket in stats.buckets if bucket[_DAY] != day]
    old = next((bucket for bucket in stats.buckets if bucket[_DAY] == day), None)
    bucket: Bucket = (
        [day, 0, 0, 0, 0, 0, 0, 0, {}, {}]
        if old is None
        else [*old[:_FUELS], dict(old[_FUELS]), dict(old[_STATIONS])]
    )
    bucket[_ML] += ml
    bucket[_CENTS] += cts
    bucket[_SALES] += 1
    bucket[_DAYPART0 + daypart(hour)] += 1
    bucket[_FUELS][fuel] = bucket[_FUELS].get(fuel, 0) + ml
    sales, last_s = bucket[_STATIONS].get(station, (0, 0))
    bucket[_STATIONS][station] = [sales + 1, max(last_s, occurred_s)]
    buckets.append(bucket)
    newest = max(b[_DAY] for b in buckets)
    kept = sorted(
        (b for b in buckets if b[_DAY] > newest - LONGEST_WINDOW_DAYS), key=lambda b: b[_DAY]
    )
    return replace(
        stats,
        buckets=tuple(kept),
        last_sale_s=max(stats.last_sale_s or 0, occurred_s),
        lifetime_ml=stats.lifetime_ml + ml,
        lifetime_cents=stats.lifetime_cents + cts,
        lifetime_sales=stats.lifetime_sales + 1,
    )


def record_refund(
    stats: Stats, sale_day: int, liters: Decimal, amount: Decimal, fuel: str
) -> Stats:
    """The stats less a refund's litres and amount, taken from the refunded sale's day (if
    still in the window) and from the lifetime totals; sales counts stay."""
    ml, cts = milli(liters), cents(amount)
    buckets = []
    for bucket in stats.buckets:
        if bucket[_DAY] == sale_day:
            fuels = dict(bucket[_FUELS])
            if fuel in fuels:
                fuels[fuel] = max(0, fuels[fuel] - ml)
            bucket = [
                bucket[_DAY],
                max(0, bucket[_ML] - ml),
                max(0, bucket[_CENTS] - cts),
                *bucket[_SALES:_FUELS],
                fuels,
                bucket[_STATIONS],
            ]
        buckets.append(bucket)
    return replace(
        stats,
        buckets=tuple(buckets),
        lifetime_ml=max(0, stats.lifetime_ml - ml),
        lifetime_cents=max(0, stats.lifetime_cents - cts),
    )


def add_points(stats: Stats, points: int) -> Stats:
    return stats if not points else replace(stats, lifetime_points=stats.lifetime_points + points)


def figures(stats: Stats, as_of_day: int, last_sale_day: int | None) -> dict[str, Any]:
    """The member's rolling figures for the trailing windows ending on ``as_of_day``
    (``last_sale_day``: the day of ``stats.last_sale_s``, in the program time zone)."""
    totals = {7: [0, 0, 0], 30: [0, 0, 0], 90: [0, 0, 0]}  # window -> [ml, cents, sales]
    dayparts = [0, 0, 0, 0]
    fuels: dict[str, list[int]] = {}  # fuel -> [ml, last day]
    stations: dict[str, list[int]] = {}  # station -> [sales, last sale time]
    for bucket in stats.buckets:
        age = as_of_day - bucket[_DAY]
        if age < 0 or age >= LONGEST_WINDOW_DAYS:
            continue
        for window, total in totals.items():
            if age < window:
                total[0] += bucket[_ML]
                total[1] += bucket[_CENTS]
                total[2] += bucket[_SALES]
        if age < 30:
            for index in range(4):
                dayparts[index] += bucket[_DAYPART0 + index]
        for fuel, ml in bucket[_FUELS].items():
            entry = fuels.setdefault(fuel, [0, 0])
            entry[0] += ml
            entry[1] = bucket[_DAY]
        for station, (sales, last_s) in bucket[_STATIONS].items():
            entry = stations.setdefault(station, [0, 0])
            entry[0] += sales
            entry[1] = max(entry[1], last_s)
    ml_90, _, sales_90 = totals[90]
    sales_30 = totals[30][2]
    return {
        "liters_7d": totals[7][0] / 1000,
        "liters_30d": totals[30][0] / 1000,
        "liters_90d": ml_90 / 1000,
        "amount_7d": totals[7][1] / 100,
        "amount_30d": totals[30][1] / 100,
        "amount_90d": totals[90][1] / 100,
        "sales_30d": sales_30,
        "sales_90d": sales_90,
        "last_sale_at": (
            None
            if stats.last_sale_s is None
            else datetime.fromtimestamp(stats.last_sale_s, UTC).isoformat()
        ),
        "days_since_last_sale": (
            None if last_sale_day is None else max(0, as_of_day - last_sale_day)
        ),
        # Most litres; a tie goes to the fuel bought most recently, then by name.
        "favourite_fuel": _most(fuels),
        # Most sales; a tie goes to the station of the most recent sale.
        "favourite_station": _most(stations),
        "avg_liters_per_fill": round(ml_90 / sales_90 / 1000, 3) if sales_90 else None,
        "daypart_shares_30d": {
            name: round(count / sales_30, 3) if sales_30 else 0.0
            for name, count in zip(DAYPARTS, dayparts, strict=True)
        },
        "lifetime_points": stats.lifetime_points,
        "lifetime_liters": stats.lifetime_ml / 1000,
        "lifetime_amount": stats.lifetime_cents / 100,
        "lifetime_sales": stats.lifetime_sales,
    }


def _most(candidates: dict[str, list[int]]) -> str | None:
    if not candidates:
        return None
    return max(candidates.items(), key=lambda item: (item[1][0], item[1][1], item[0]))[0]
