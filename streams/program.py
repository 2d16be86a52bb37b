"""The loyalty program file: the numbers a loyalty manager changes, validated at load time.

The file is TOML (``program/default.toml`` is the documented example). Any problem raises
:class:`ProgramError` naming the file, the field and the reason, so a worker refuses to
start with a program it would misread.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


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
class Program:
    version: str
    timezone: str
    default_locale: str
    fuel_points: FuelPointsRule
    welcome_bonus_points: int
    refund_window_days: int


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

    def integer(self, name: str, minimum: int) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "must be an integer")
        if value < minimum:
            raise self._fail(name, f"must be >= {minimum}, got {value}")
        return value

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

    root.done()
    return Program(
        version=version,
        timezone=timezone,
        default_locale=default_locale,
        fuel_points=fuel_points,
        welcome_bonus_points=welcome_bonus_points,
        refund_window_days=refund_window_days,
    )


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
