"""The rewards catalog: what members can spend their points on.

A reward is one record of the compacted topic ``loyalty.catalog``, keyed by its
``reward_id`` (UTF-8); the latest record of a key is the reward, a tombstone removes it.
The value is a UTF-8 JSON object (:func:`encode_reward` writes it, :func:`decode_reward`
reads it)::

    {"reward_id": "car-wash",                 an id (schemas/ids.py), = the record key
     "name": {"en": "Car wash", "es": ...},   display name by locale; "en" is required
     "cost_points": 450,                      points per unit, 1 to 10^9
     "stock": 40,                             units the catalog offers, >= 0; null: unlimited
     "active": true,                          false: listed, not redeemable (optional, true)
     "per_member_limit": 2}                   units one member may redeem; null or absent: no limit

Like every contract, it only grows: readers ignore fields they do not know. The live stock
of a reward is its ``stock`` less the units reserved by redemptions (``schemas.state``'s
``RewardStock``).

Catalog files (``loyalty catalog load FILE``, ``program/catalog.toml`` is the example) are
TOML with one ``[[rewards]]`` table per reward, the same fields, except that TOML has no null:
``stock = "unlimited"`` and an absent ``per_member_limit``. A file is stricter than a record:
unknown fields and a ``reward_id`` given twice are refused, so a typo cannot slip through.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loyalty.schemas.ids import MAX_ID_LENGTH, is_identifier

FALLBACK_LOCALE = "en"
UNLIMITED = "unlimited"
"""How a catalog file writes ``stock`` = null."""

MAX_COST_POINTS = 10**9
"""Highest price of one unit: a request's points (up to 100 units) stay far below the bound
the member's partition accepts on a hold (``schemas.decode.MAX_STEP_POINTS``), so no saga
step of a catalog reward can be refused for its size and leave the redemption waiting."""
_FIELDS = ("reward_id", "name", "cost_points", "stock", "active", "per_member_limit")


class CatalogError(ValueError):
    """An invalid catalog record or file: the message names where, the field and why."""

    def __init__(self, where: str, field: str | None, reason: str) -> None:
        super().__init__(f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}")
        self.where = where
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Reward:
    """One entry of the catalog."""

    reward_id: str
    name: dict[str, str]
    """Display name by locale; ``en`` is always there (the fallback)."""
    cost_points: int
    """Points per unit."""
    stock: int | None
    """Units the catalog offers in all; None: unlimited."""
    active: bool = True
    """False: still listed (and its redemptions can be fulfilled or cancelled), but new
    requests are rejected. A reward is retired this way, never by deleting it."""
    per_member_limit: int | None = None
    """Units one member may redeem in all; None: no limit."""

    def display_name(self, locale: str | None) -> str:
        """The name in ``locale`` (``es-ES`` also finds ``es``), else in English."""
        if locale:
            for candidate in (locale, locale.replace("_", "-").split("-")[0]):
                if candidate in self.name:
                    return self.name[candidate]
        return self.name[FALLBACK_LOCALE]


def _whole(value: Any, minimum: int) -> int | None:
    """``value`` if it is an integer (not a boolean) >= ``minimum``, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    return None


def _reward_id(data: Mapping[str, Any], where: str) -> str:
    value = data.get("reward_id")
    if value is None:
        raise CatalogError(where, "reward_id", "is required")
    if not isinstance(value, str) or not is_identifier(value):
        raise CatalogError(
            where,
            "reward_id",
            f"must be an id: 1 to {MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ : @ + -, "
            f"starting with a letter or digit (as redemption requests send it), got {value!r}",
        )
    return value


def _reward(data: Mapping[str, Any], where: str, *, in_file: bool) -> Reward:
    """Validate one reward, from a record (``in_file`` False) or a ``[[rewards]]`` table."""
    reward_id = _reward_id(data, where)
    where = f"{where} ({reward_id!r})"

    def fail(field: str, reason: str) -> CatalogError:
        return CatalogError(where, field, reason)

    if in_file:
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise fail(unknown[0], f"is not a known field (known: {', '.join(_FIELDS)})")

    name = data.get("name")
    if not isinstance(name, Mapping) or not name:
        raise fail("name", "is required: the display name by locale, e.g. {en = 'Coffee'}")
    for locale, text in name.items():
        if not isinstance(locale, str) or not locale:
            raise fail("name", f"locale {locale!r} must be a non-empty string")
        if not isinstance(text, str) or not text.strip():
            raise fail(f"name.{locale}", "must be a non-empty string")
    if FALLBACK_LOCALE not in name:
        raise fail("name", f"must have an '{FALLBACK_LOCALE}' entry (the fallback)")

    cost_points = _whole(data.get("cost_points"), 1)
    if cost_points is None or cost_points > MAX_COST_POINTS:
        raise fail(
            "cost_points",
            f"must be an integer from 1 to {MAX_COST_POINTS:,}, got {data.get('cost_points')!r}",
        )

    if "stock" not in data:
        null = f'"{UNLIMITED}"' if in_file else "null"
        raise fail("stock", f"is required: a whole number of units >= 0, or {null} for unlimited")
    raw_stock = data["stock"]
    stock = _whole(raw_stock, 0)
    unlimited = raw_stock == UNLIMITED if in_file else raw_stock is None
    if stock is None and not unlimited:
        null = f'"{UNLIMITED}"' if in_file else "null"
        raise fail("stock", f"must be an integer >= 0 or {null}, got {raw_stock!r}")

    active = data.get("active", True)
    if not isinstance(active, bool):
        raise fail("active", f"must be true or false, got {active!r}")

    raw_limit = data.get("per_member_limit")
    limit = _whole(raw_limit, 1)
    if raw_limit is not None and limit is None:
        raise fail("per_member_limit", f"must be an integer >= 1 (or absent), got {raw_limit!r}")

    return Reward(reward_id, dict(name), cost_points, stock, active, limit)


def decode_reward(value: bytes) -> Reward:
    """A ``loyalty.catalog`` record's value; raises :class:`CatalogError`."""
    where = "catalog record"
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise CatalogError(where, None, f"not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CatalogError(where, None, f"must be a JSON object, got {type(data).__name__}")
    return _reward(data, where, in_file=False)


def encode_reward(reward: Reward) -> bytes:
    """The ``loyalty.catalog`` value of ``reward`` (every field, null for none)."""
    return orjson.dumps(
        {
            "reward_id": reward.reward_id,
            "name": reward.name,
            "cost_points": reward.cost_points,
            "stock": reward.stock,
            "active": reward.active,
            "per_member_limit": reward.per_member_limit,
        }
    )


def load_catalog_file(path: str | Path) -> list[Reward]:
    """The rewards of a catalog file, in file order; raises :class:`CatalogError` naming
    the file, the entry (``rewards[i]`` and its reward_id) and the field."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogError(source, None, f"cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise CatalogError(source, None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(source, None, f"is not valid TOML ({error})") from None
    unknown = sorted(set(data) - {"rewards"})
    if unknown:
        raise CatalogError(source, unknown[0], "is not a known field (only [[rewards]] tables)")
    entries = data.get("rewards")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(source, "rewards", "is required: one [[rewards]] table per reward")
    rewards: list[Reward] = []
    first_entry: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: rewards[{index}]"
        if not isinstance(entry, dict):
            raise CatalogError(where, None, "must be a table ([[rewards]])")
        reward = _reward(entry, where, in_file=True)
        if reward.reward_id in first_entry:
            raise CatalogError(
                f"{where} ({reward.reward_id!r})",
                "reward_id",
                f"is already used by rewards[{first_entry[reward.reward_id]}]",
            )
        first_entry[reward.reward_id] = index
        rewards.append(reward)
    return rewards
