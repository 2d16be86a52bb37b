"""The loyalty program file: the numbers a loyalty manager changes, validated at load time.

The file is TOML (``program/default.toml`` is the documented example). Any problem raises
:class:`ProgramError` naming the file, the field and the reason, so a worker refuses to
start with a program it would misread.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loyalty.core.predicates import Predicate, PredicateError, compile_predicate, fields_of


class ProgramError(ValueError):
    """An invalid program file."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        super().__init__(f"{source}: field '{field}': {reason}")
        self.source = source
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class FuelPointsRule:
    points_per_liter: Decimal
    volume_threshold_liters: Decimal
    volume_multiplier: Decimal


@dataclass(frozen=True)
class Tier:
    name: str
    min_points: int
    """Points earned in the trailing window needed to hold the tier."""
    multiplier: Decimal
    """Applied to fuel points."""


@dataclass(frozen=True)
class Mission:
    id: str
    sales: int
    """Sales needed within the trailing window (the current sale included)."""
    window_days: int
    min_liters: Decimal
    """Only sales of at least this many litres count."""
    bonus_points: int
    cooldown_days: int
    """At most one award per this many days."""


@dataclass(frozen=True)
class CouponOffer:
    benefit: str
    """``bonus_points`` (credited by the engine) or ``discount_percent`` (applied by the POS)."""
    value: int
    valid_days: int


@dataclass(frozen=True)
class Rfm:
    """RFM score thresholds, four each (scores 2 to 5; below the first is 1)."""

    recency_days: tuple[int, ...]
    """Ascending: a last sale at most this many days ago scores 5, 4, 3, 2; older, 1."""
    frequency_sales_90d: tuple[int, ...]
    """Ascending: at least this many sales in 90 days score 2, 3, 4, 5; fewer, 1."""
    monetary_amount_90d: tuple[Decimal, ...]
    """Ascending: at least this amount spent in 90 days scores 2, 3, 4, 5; less, 1."""


@dataclass(frozen=True)
class Segment:
    name: str
    when: str
    """The predicate as written (see ``core.predicates``)."""
    matches: Predicate = field(compare=False, repr=False)


@dataclass(frozen=True)
class WinBack:
    """Entering ``segment`` issues ``coupon`` and a ``win_back`` notification."""

    segment: str
    coupon: CouponOffer


@dataclass(frozen=True)
class Template:
    title: str
    body: str


@dataclass(frozen=True)
class Program:
    version: str
    timezone: str
    default_locale: str
    fuel_points: FuelPointsRule
    welcome_bonus_points: int
    refund_window_days: int
    tier_window_days: int = 365
    birthday_bonus_points: int = 0
    referrer_points: int = 0
    referee_points: int = 0
    expiry_after_days: int = 365
    expiry_notice_days: int = 7
    tiers: tuple[Tier, ...] = (Tier("bronze", 0, Decimal(1)),)
    """Ascending by ``min_points``; the first has ``min_points = 0``."""
    missions: tuple[Mission, ...] = ()
    newsletter_coupon: CouponOffer | None = None
    marketing_kinds: frozenset[str] = frozenset()
    """Notification kinds sent only to members with marketing consent."""
    templates: dict[str, dict[str, Template]] | None = None
    """kind -> locale -> template; ``en`` is the fallback locale."""
    reason_texts: dict[str, dict[str, str]] = field(default_factory=dict)
    """locale -> rejection reason -> the words a notification uses for it (``en`` is the
    fallback); a reason without words is shown as its code."""
    rfm: Rfm | None = None
    segments: tuple[Segment, ...] = ()
    win_back: WinBack | None = None


class _Reader:
    """Typed access to one TOML table, raising ProgramError with the dotted field name."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.prefix = prefix
        self.seen: set[str] = set()

    def _fail(self, name: str, reason: str) -> ProgramError:
        return ProgramError(self.source, self.prefix + name, reason)

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        if name not in self.data:
            raise self._fail(name, "is required")
        return self.data[name]

    def section(self, name: str) -> _Reader:
        value = self._get(name)
        if not isinstance(value, dict):
            raise self._fail(name, "must be a table")
        return _Reader(value, self.source, f"{self.prefix}{name}.")

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str) or not value:
            raise self._fail(name, "must be a non-empty string")
        return value

    def number(self, name: str, minimum: Decimal, inclusive: bool = True) -> Decimal:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(name, "must be a number")
        number = Decimal(str(value))
        if number < minimum or (not inclusive and number == minimum):
            bound = ">=" if inclusive else ">"
            raise self._fail(name, f"must be {bound} {minimum}, got {value}")
        return number

    def strings(self, name: str) -> list[str]:
        value = self._get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(name, "must be an array of strings")
        return value

    def ascending(self, name: str, count: int) -> tuple[Decimal, ...]:
        value = self._get(name)
        numbers = value if isinstance(value, list) else []
        if len(numbers) != count or not all(
            isinstance(item, int | float) and not isinstance(item, bool) and item >= 0
            for item in numbers
        ):
            raise self._fail(name, f"must be an array of {count} numbers >= 0")
        if any(a >= b for a, b in zip(numbers, numbers[1:], strict=False)):
            raise self._fail(name, "must strictly increase")
        return tuple(Decimal(str(item)) for item in numbers)

    def integer(self, name: str, minimum: int) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "must be an integer")
        if value < minimum:
            raise self._fail(name, f"must be >= {minimum}, got {value}")
        return value

    def tables(self, name: str) -> list[_Reader]:
        value = self._get(name)
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self._fail(name, "must be an array of tables ([[...]])")
        return [
            _Reader(item, self.source, f"{self.prefix}{name}[{i}].") for i, item in enumerate(value)
        ]

    def optional(self, name: str) -> bool:
        return name in self.data

    def done(self) -> None:
        """Reject unknown fields: a typo must not silently fall back to a default."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self._fail(unknown[0], "is not a known field")


def parse_program(data: dict[str, Any], source: str = "<program>") -> Program:
    """Validate a parsed program document."""
    root = _Reader(data, source)
    version = root.text("version")
    timezone = root.text("timezone")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ProgramError(source, "timezone", f"unknown time zone {timezone!r}") from None
    default_locale = root.text("default_locale")

    fuel = root.section("fuel_points")
    fuel_points = FuelPointsRule(
        points_per_liter=fuel.number("points_per_liter", Decimal(0)),
        volume_threshold_liters=fuel.number("volume_threshold_liters", Decimal(0)),
        volume_multiplier=fuel.number("volume_multiplier", Decimal(1)),
    )
    fuel.done()

    welcome = root.section("welcome_bonus")
    welcome_bonus_points = welcome.integer("points", 0)
    welcome.done()

    refunds = root.section("refunds")
    refund_window_days = refunds.integer("window_days", 1)
    refunds.done()

    referral = root.section("referral")
    referrer_points = referral.integer("referrer_points", 0)
    referee_points = referral.integer("referee_points", 0)
    referral.done()

    birthday = root.section("birthday_bonus")
    birthday_bonus_points = birthday.integer("points", 0)
    birthday.done()

    expiry = root.section("expiry")
    expiry_after_days = expiry.integer("after_days", 1)
    expiry_notice_days = expiry.integer("notice_days", 0)
    expiry.done()

    tiers_section = root.section("tiers")
    tier_window_days = tiers_section.integer("window_days", 1)
    tiers = []
    for level in tiers_section.tables("levels"):
        tiers.append(
            Tier(
                name=level.text("name"),
                min_points=level.integer("min_points", 0),
                multiplier=level.number("multiplier", Decimal(1)),
            )
        )
        level.done()
    tiers_section.done()
    if not tiers or tiers[0].min_points != 0:
        raise ProgramError(source, "tiers.levels", "the first tier must have min_points = 0")
    if any(a.min_points >= b.min_points for a, b in zip(tiers, tiers[1:], strict=False)):
        raise ProgramError(source, "tiers.levels", "min_points must strictly increase")

    missions = []
    for entry in root.tables("missions") if root.optional("missions") else []:
        mission = Mission(
            id=entry.text("id"),
            sales=entry.integer("sales", 1),
            window_days=entry.integer("window_days", 1),
            min_liters=entry.number("min_liters", Decimal(0)),
            bonus_points=entry.integer("bonus_points", 0),
            cooldown_days=entry.integer("cooldown_days", 0),
        )
        if mission.window_days > refund_window_days:
            raise ProgramError(
                source,
                f"{entry.prefix}window_days",
                f"must be <= refunds.window_days ({refund_window_days}): sales are "
                "remembered only that long",
            )
        entry.done()
        missions.append(mission)

    coupons = root.section("coupons")
    newsletter = coupons.section("newsletter")
    newsletter_coupon = _coupon_offer(newsletter)
    newsletter.done()
    coupons.done()

    rfm = None
    if root.optional("rfm"):
        section = root.section("rfm")
        rfm = Rfm(
            recency_days=tuple(int(days) for days in section.ascending("recency_days", 4)),
            frequency_sales_90d=tuple(
                int(sales) for sales in section.ascending("frequency_sales_90d", 4)
            ),
            monetary_amount_90d=section.ascending("monetary_amount_90d", 4),
        )
        section.done()

    segments: list[Segment] = []
    for entry in root.tables("segments") if root.optional("segments") else []:
        name, when = entry.text("name"), entry.text("when")
        if any(segment.name == name for segment in segments):
            raise ProgramError(source, f"{entry.prefix}name", f"{name!r} is defined twice")
        try:
            segments.append(Segment(name, when, compile_predicate(when)))
        except PredicateError as error:
            reason = f"segment {name!r}: {error}"
            raise ProgramError(source, f"{entry.prefix}when", reason) from None
        entry.done()
    if rfm is None and any(
        name.startswith("rfm_") for segment in segments for name in fields_of(segment.when)
    ):
        raise ProgramError(source, "rfm", "is required by segments using rfm_ fields")

    win_back = None
    if root.optional("win_back"):
        section = root.section("win_back")
        segment_name = section.text("segment")
        if all(segment.name != segment_name for segment in segments):
            raise ProgramError(source, "win_back.segment", f"no segment named {segment_name!r}")
        win_back = WinBack(segment_name, _coupon_offer(section, "coupon_"))
        section.done()

    notifications = root.section("notifications")
    marketing_kinds = frozenset(notifications.strings("marketing_kinds"))
    templates = _load_templates(notifications, source)
    reason_texts: dict[str, dict[str, str]] = {}
    if notifications.optional("reason_texts"):
        section = notifications.section("reason_texts")
        for locale in list(section.data):
            words = section.section(locale)
            reason_texts[locale] = {reason: words.text(reason) for reason in list(words.data)}
            words.done()
        section.done()
        if "en" not in reason_texts:
            raise ProgramError(
                source, "notifications.reason_texts", "needs an 'en' table (the fallback)"
            )
    notifications.done()

    root.done()
    return Program(
        version=version,
        timezone=timezone,
        default_locale=default_locale,
        fuel_points=fuel_points,
        welcome_bonus_points=welcome_bonus_points,
        refund_window_days=refund_window_days,
        tier_window_days=tier_window_days,
        birthday_bonus_points=birthday_bonus_points,
        referrer_points=referrer_points,
        referee_points=referee_points,
        expiry_after_days=expiry_after_days,
        expiry_notice_days=expiry_notice_days,
        tiers=tuple(tiers),
        missions=tuple(missions),
        newsletter_coupon=newsletter_coupon,
        marketing_kinds=marketing_kinds,
        templates=templates,
        reason_texts=reason_texts,
        rfm=rfm,
        segments=tuple(segments),
        win_back=win_back,
    )


def _coupon_offer(section: _Reader, prefix: str = "") -> CouponOffer:
    """A coupon offer from ``{prefix}benefit``, ``{prefix}value``, ``{prefix}valid_days``."""
    benefit = section.text(f"{prefix}benefit")
    if benefit not in ("bonus_points", "discount_percent"):
        raise section._fail(f"{prefix}benefit", "must be bonus_points or discount_percent")
    offer = CouponOffer(
        benefit=benefit,
        value=section.integer(f"{prefix}value", 1),
        valid_days=section.integer(f"{prefix}valid_days", 1),
    )
    return offer


def _load_templates(notifications: _Reader, source: str) -> dict[str, dict[str, Template]]:
    """``[notifications.templates.<kind>.<locale>]`` tables with ``title`` and ``body``."""
    section = notifications.section("templates")
    templates: dict[str, dict[str, Template]] = {}
    for kind in list(section.data):
        by_locale = section.section(kind)
        templates[kind] = {}
        for locale in list(by_locale.data):
            entry = by_locale.section(locale)
            templates[kind][locale] = Template(title=entry.text("title"), body=entry.text("body"))
            entry.done()
        by_locale.done()
        if "en" not in templates[kind]:
            raise ProgramError(
                source, f"notifications.templates.{kind}", "needs an 'en' template (the fallback)"
            )
    section.done()
    return templates


def load_program(path: Path) -> Program:
    """Read and validate a program file."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ProgramError(source, "-", "file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ProgramError(source, "-", f"not valid TOML: {error}") from None
    return parse_program(data, source)
