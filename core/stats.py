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

from loyalty.schemas.state import Stats

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
    points: int,
) -> Stats:
    """The stats with one more sale, on ``day`` (ordinal) at ``hour`` (program time zone),
    which credited ``points``."""
    ml, cts = milli(liters), cents(amount)
    buckets = list(stats.buckets)
    # Buckets are ascending by day and a sale is usually on the newest day or a later one.
    index = len(buckets)
    while index and buckets[index - 1][_DAY] > day:
        index -= 1
    if index and buckets[index - 1][_DAY] == day:
        old = buckets[index - 1]
        bucket = [*old[:_FUELS], dict(old[_FUELS]), dict(old[_STATIONS])]
        buckets[index - 1] = bucket
    else:
        bucket = [day, 0, 0, 0, 0, 0, 0, 0, {}, {}]
        buckets.insert(index, bucket)
    bucket[_ML] += ml
    bucket[_CENTS] += cts
    bucket[_SALES] += 1
    bucket[_DAYPART0 + daypart(hour)] += 1
    bucket[_FUELS][fuel] = bucket[_FUELS].get(fuel, 0) + ml
    sales, last_s = bucket[_STATIONS].get(station, (0, 0))
    bucket[_STATIONS][station] = [sales + 1, max(last_s, occurred_s)]
    oldest_kept = buckets[-1][_DAY] - LONGEST_WINDOW_DAYS
    if buckets[0][_DAY] <= oldest_kept:
        buckets = [b for b in buckets if b[_DAY] > oldest_kept]
    return Stats(
        buckets=tuple(buckets),
        last_sale_s=max(stats.last_sale_s or 0, occurred_s),
        lifetime_points=stats.lifetime_points + points,
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


def figures(stats: Stats, as_of_day: int) -> dict[str, Any]:
    """The member's rolling figures for the trailing windows ending on ``as_of_day``."""
    ml_7 = ml_30 = ml_90 = cents_7 = cents_30 = cents_90 = sales_30 = sales_90 = 0
    morning = midday = evening = night = 0
    fuels: dict[str, list[int]] = {}  # fuel -> [ml, last day]
    stations: dict[str, list[int]] = {}  # station -> [sales, last sale time]
    for bucket in stats.buckets:
        day, ml, cts, sales = bucket[_DAY], bucket[_ML], bucket[_CENTS], bucket[_SALES]
        age = as_of_day - day
        if age < 0 or age >= LONGEST_WINDOW_DAYS:
            continue
        ml_90 += ml
        cents_90 += cts
        sales_90 += sales
        if age < 30:
            ml_30 += ml
            cents_30 += cts
            sales_30 += sales
            morning += bucket[4]
            midday += bucket[5]
            evening += bucket[6]
            night += bucket[7]
            if age < 7:
                ml_7 += ml
                cents_7 += cts
        for fuel, fuel_ml in bucket[_FUELS].items():
            entry = fuels.get(fuel)
            if entry is None:
                fuels[fuel] = [fuel_ml, day]
            else:
                entry[0] += fuel_ml
                entry[1] = day
        for station, (station_sales, last_s) in bucket[_STATIONS].items():
            entry = stations.get(station)
            if entry is None:
                stations[station] = [station_sales, last_s]
            else:
                entry[0] += station_sales
                entry[1] = max(entry[1], last_s)
    last_sale_s = stats.last_sale_s
    # Buckets are only dropped relative to the newest, which is the last sale's day.
    last_sale_day = stats.buckets[-1][_DAY] if stats.buckets else None
    return {
        "liters_7d": ml_7 / 1000,
        "liters_30d": ml_30 / 1000,
        "liters_90d": ml_90 / 1000,
        "amount_7d": cents_7 / 100,
        "amount_30d": cents_30 / 100,
        "amount_90d": cents_90 / 100,
        "sales_30d": sales_30,
        "sales_90d": sales_90,
        "last_sale_at": (
            None if last_sale_s is None else datetime.fromtimestamp(last_sale_s, UTC).isoformat()
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
            "morning": round(morning / sales_30, 3) if sales_30 else 0.0,
            "midday": round(midday / sales_30, 3) if sales_30 else 0.0,
            "evening": round(evening / sales_30, 3) if sales_30 else 0.0,
            "night": round(night / sales_30, 3) if sales_30 else 0.0,
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
