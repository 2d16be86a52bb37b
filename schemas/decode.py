"""Strict decoding of raw Kafka values into input records.

Every rejection raises :class:`InvalidEvent` with a machine-readable ``reason`` (part of
the public contract: it is the ``reason`` of the dead letter) and a human-readable message.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from schemas.events import (
    ACCEPTED,
    MEMBER_EVENT_TYPES,
    REDEMPTION_REQUEST,
    REDEMPTION_TYPES,
    REFEREE,
    REFERRER,
    REFERRER_ERASED,
    SALE,
    SELF_REFERRAL,
    TRANSACTION_TYPES,
    UNKNOWN_REFERRAL_CODE,
    MemberEvent,
    RedemptionMessage,
    RedemptionStep,
    ReferralOutcome,
    Transaction,
)

# Dead-letter reasons produced here.
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_TYPE = "invalid_type"
OUT_OF_RANGE = "out_of_range"
INVALID_VALUE = "invalid_value"
INVALID_TIMESTAMP = "invalid_timestamp"
NAIVE_TIMESTAMP = "naive_timestamp"

MAX_ID_LENGTH = 64
MAX_LITERS = Decimal(1000)


class InvalidEvent(ValueError):
    """An input value that breaks the contract."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def load_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parse one raw value into a JSON object, or raise :class:`InvalidEvent`."""
    if value is None:
        raise InvalidEvent(INVALID_JSON, "message has no value (null / tombstone)")
    if len(value) > max_bytes:
        raise InvalidEvent(TOO_LARGE, f"value is {len(value)} bytes; the limit is {max_bytes}")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            raise InvalidEvent(INVALID_UTF8, f"value is not UTF-8: {utf8_error}") from None
        raise InvalidEvent(INVALID_JSON, f"value is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise InvalidEvent(NOT_AN_OBJECT, f"value is a JSON {type(parsed).__name__}, not an object")
    return parsed


def _require(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent(MISSING_FIELD, f"field '{name}' is required")
    return value


def _identifier(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = _require(obj, name) if required else obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a string")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be 1-{MAX_ID_LENGTH} characters")
    return value


def _text(obj: dict[str, Any], name: str, default: str | None = None) -> str:
    value = obj.get(name)
    if value is None:
        if default is None:
            raise InvalidEvent(MISSING_FIELD, f"field '{name}' is required")
        return default
    if not isinstance(value, str) or not value:
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a non-empty string")
    return value


def _number(obj: dict[str, Any], name: str) -> Decimal:
    value = _require(obj, name)
    # bool is an int subclass in Python; true/false are not numbers in the contract.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a number")
    # str() of a float is its shortest round-trip form, so Decimal gets the JSON digits.
    return Decimal(str(value))


def parse_timestamp(value: Any, name: str) -> datetime:
    """An ISO-8601 timestamp with a UTC offset; naive timestamps are rejected."""
    if not isinstance(value, str):
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(
            INVALID_TIMESTAMP, f"field '{name}' is not ISO-8601: {value!r}"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidEvent(NAIVE_TIMESTAMP, f"field '{name}' has no UTC offset: {value!r}")
    return parsed


def decode_transaction(value: bytes | None, max_bytes: int) -> Transaction:
    """Decode and validate one POS transaction. Unknown extra fields are ignored."""
    obj = load_object(value, max_bytes)
    transaction_id = _identifier(obj, "transaction_id")
    member_id = _identifier(obj, "member_id")
    kind = obj.get("type", SALE)
    if kind not in TRANSACTION_TYPES:
        raise InvalidEvent(INVALID_VALUE, f"field 'type' must be one of {TRANSACTION_TYPES}")
    liters = _number(obj, "liters")
    if not 0 < liters <= MAX_LITERS:
        raise InvalidEvent(OUT_OF_RANGE, f"field 'liters' must be > 0 and <= {MAX_LITERS}")
    amount = _number(obj, "amount")
    if amount < 0:
        raise InvalidEvent(OUT_OF_RANGE, "field 'amount' must be >= 0")
    original = _identifier(obj, "original_transaction_id", required=kind != SALE)
    coupon_codes = obj.get("coupon_codes")
    if coupon_codes is None:
        coupon_codes = []
    if not isinstance(coupon_codes, list) or not all(
        isinstance(code, str) and code for code in coupon_codes
    ):
        raise InvalidEvent(INVALID_TYPE, "field 'coupon_codes' must be a list of strings")
    return Transaction(
        transaction_id=transaction_id,  # type: ignore[arg-type]
        member_id=member_id,  # type: ignore[arg-type]
        station_id=_text(obj, "station_id"),
        occurred_at=parse_timestamp(_require(obj, "occurred_at"), "occurred_at"),
        fuel_type=_text(obj, "fuel_type"),
        liters=liters,
        amount=amount,
        type=kind,
        currency=_text(obj, "currency", default="EUR"),
        original_transaction_id=original,
        coupon_codes=tuple(coupon_codes),
    )


MAX_LOCALE_LENGTH = 16
MAX_CONTACT_LENGTH = 254


def _optional_text(obj: dict[str, Any], name: str, max_length: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a non-empty string")
    if len(value) > max_length:
        raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be at most {max_length} characters")
    return value


def _birth_date(obj: dict[str, Any]) -> date | None:
    value = obj.get("birth_date")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 10:
        raise InvalidEvent(INVALID_TYPE, "field 'birth_date' must be a YYYY-MM-DD string")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(INVALID_VALUE, f"field 'birth_date' is not a date: {value!r}") from None


def _marketing_consent(obj: dict[str, Any]) -> bool | None:
    consents = obj.get("consents")
    if consents is None:
        return None
    if not isinstance(consents, dict):
        raise InvalidEvent(INVALID_TYPE, "field 'consents' must be an object")
    marketing = consents.get("marketing")
    if marketing is not None and not isinstance(marketing, bool):
        raise InvalidEvent(INVALID_TYPE, "field 'consents.marketing' must be true or false")
    return marketing


def decode_member_event(value: bytes | None, max_bytes: int) -> MemberEvent:
    """Decode and validate one member event. Unknown extra fields are ignored."""
    obj = load_object(value, max_bytes)
    event_id = _identifier(obj, "event_id")
    member_id = _identifier(obj, "member_id")
    kind = _require(obj, "type")
    if kind not in MEMBER_EVENT_TYPES:
        raise InvalidEvent(INVALID_VALUE, f"field 'type' must be one of {MEMBER_EVENT_TYPES}")
    email = _optional_text(obj, "email", MAX_CONTACT_LENGTH)
    if email is not None and "@" not in email:
        raise InvalidEvent(INVALID_VALUE, "field 'email' is not an e-mail address")
    return MemberEvent(
        event_id=event_id,  # type: ignore[arg-type]
        member_id=member_id,  # type: ignore[arg-type]
        type=kind,
        occurred_at=parse_timestamp(_require(obj, "occurred_at"), "occurred_at"),
        birth_date=_birth_date(obj),
        locale=_optional_text(obj, "locale", MAX_LOCALE_LENGTH),
        referral_code=_optional_text(obj, "referral_code", MAX_ID_LENGTH),
        marketing_consent=_marketing_consent(obj),
        email=email,
        phone=_optional_text(obj, "phone", 32),
    )


def decode_daily_command(value: bytes | None) -> date:
    """The date of a daily-job command (``{"command": "daily", "date": "YYYY-MM-DD"}``)."""
    obj = load_object(value, 4096)
    if obj.get("command") != "daily":
        raise InvalidEvent(INVALID_VALUE, "field 'command' must be 'daily'")
    raw = _require(obj, "date")
    try:
        return date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise InvalidEvent(INVALID_VALUE, f"field 'date' is not YYYY-MM-DD: {raw!r}") from None


# Internal topics (written by the engine) are validated like inputs: anyone who can write
# to Kafka can write to them, and a forged or corrupt command must be dead-lettered, not
# trusted. Their value names are the saga's and the referral agent's (streams.redemptions,
# agents.referrals); tests/unit/test_boundary.py checks they agree.
MEMBER_STEPS = ("hold", "confirm", "reject", "fulfilled", "cancel")
"""Redemption steps for a member's partition (``loyalty.member-commands``)."""
REPLY_STEPS = ("held", "refused", "reserved", "unavailable")
"""Replies to a redemption's coordinator (``loyalty.redemption-steps``)."""
STOCK_STEPS = ("reserve", "return")
"""Stock steps for a reward's partition (``loyalty.stock-commands``)."""
REJECTION_REASONS = (
    "insufficient_points",
    "out_of_stock",
    "unknown_reward",
    "inactive_reward",
    "limit_reached",
)
"""Why a redemption is rejected (a ``reject`` step's or a reply's ``reason``)."""
REFERRAL_ROLES = (REFEREE, REFERRER)
REFERRAL_STATUSES = (ACCEPTED, SELF_REFERRAL, UNKNOWN_REFERRAL_CODE, REFERRER_ERASED)
REFERRAL_OPS = ("register", "erase", "claim")
"""Messages of ``loyalty.referrals``, keyed by code."""
MAX_COMMAND_BYTES = 16384
MAX_STEP_POINTS = 10**15
"""Most points one redemption step may move: far above any reward's price, within the
64-bit integers the state is stored in and the 53 bits a JSON reader keeps exact."""
MAX_REFERRAL_CODE_LENGTH = 4 * MAX_ID_LENGTH
"""A referral code as typed at signup (at most 64 characters), normalised (upper case can
lengthen a character)."""


def _whole_in_range(obj: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _require(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a whole number")
    if not low <= value <= high:
        raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be {low}-{high}")
    return value


def _one_of(obj: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = _require(obj, name)
    if value not in allowed:
        raise InvalidEvent(INVALID_VALUE, f"field '{name}' must be one of {', '.join(allowed)}")
    return value  # type: ignore[no-any-return]


def _code(obj: dict[str, Any]) -> str:
    value = _text(obj, "code")
    if len(value) > MAX_REFERRAL_CODE_LENGTH:
        raise InvalidEvent(
            OUT_OF_RANGE, f"field 'code' must be at most {MAX_REFERRAL_CODE_LENGTH} characters"
        )
    return value


def _timestamp_text(obj: dict[str, Any], name: str) -> str:
    """A timestamp an internal message carries on as text; validated like ``occurred_at``."""
    value = _require(obj, name)
    parse_timestamp(value, name)
    return value  # type: ignore[no-any-return]


def _reason(obj: dict[str, Any], required: bool) -> str | None:
    if obj.get("reason") is None and not required:
        return None
    return _one_of(obj, "reason", REJECTION_REASONS)


def _reward_name(obj: dict[str, Any]) -> dict[str, str] | None:
    names = obj.get("reward_name")
    if names is None:
        return None
    # The catalog's names, as long as it has them (the whole command is bounded).
    if not isinstance(names, dict) or not all(
        isinstance(locale, str) and isinstance(name, str) for locale, name in names.items()
    ):
        raise InvalidEvent(INVALID_TYPE, "field 'reward_name' must map locales to names")
    return names


def decode_member_command(value: bytes | None) -> ReferralOutcome | RedemptionStep:
    """An internal command for a member's partition: a referral outcome, or a redemption
    step. Written by the engine, but validated like any input (types, allowed values, ids,
    signs and bounds of points and quantity, timestamps); whether it matches a claim or a
    hold the member has is a rule of ``tables.accounts``."""
    obj = load_object(value, MAX_COMMAND_BYTES)
    if "redemption" in obj:
        step = _one_of(obj, "redemption", MEMBER_STEPS)
        # Only a reward unknown to the catalog is rejected at 0 points.
        lowest = 0 if step == "reject" else 1
        limit = None
        if obj.get("per_member_limit") is not None:
            limit = _whole_in_range(obj, "per_member_limit", 1, MAX_STEP_POINTS)
        return RedemptionStep(
            step=step,
            request_id=_identifier(obj, "request_id"),  # type: ignore[arg-type]
            member_id=_identifier(obj, "member_id"),  # type: ignore[arg-type]
            reward_id=_identifier(obj, "reward_id"),  # type: ignore[arg-type]
            quantity=_whole_in_range(obj, "quantity", 1, MAX_QUANTITY),
            points=_whole_in_range(obj, "points", lowest, MAX_STEP_POINTS),
            station_id=_identifier(obj, "station_id"),  # type: ignore[arg-type]
            requested_at=_timestamp_text(obj, "requested_at"),
            occurred_at=parse_timestamp(_require(obj, "occurred_at"), "occurred_at"),
            reason=_reason(obj, required=False),
            per_member_limit=limit,
            reward_name=_reward_name(obj),
        )
    return ReferralOutcome(
        member_id=_identifier(obj, "member_id"),  # type: ignore[arg-type]
        role=_one_of(obj, "role", REFERRAL_ROLES),
        signup_event_id=_identifier(obj, "signup_event_id"),  # type: ignore[arg-type]
        code=_code(obj),
        status=_one_of(obj, "status", REFERRAL_STATUSES),
        occurred_at=parse_timestamp(_require(obj, "occurred_at"), "occurred_at"),
    )


def decode_stock_command(value: bytes | None) -> dict[str, Any]:
    """A reservation or a return for a reward's partition (``loyalty.stock-commands``),
    validated like any input."""
    obj = load_object(value, MAX_COMMAND_BYTES)
    return {
        "stock": _one_of(obj, "stock", STOCK_STEPS),
        "request_id": _identifier(obj, "request_id"),
        "reward_id": _identifier(obj, "reward_id"),
        "quantity": _whole_in_range(obj, "quantity", 1, MAX_QUANTITY),
        "occurred_at": _timestamp_text(obj, "occurred_at"),
    }


def decode_saga_reply(obj: dict[str, Any]) -> dict[str, Any]:
    """A reply to a redemption's coordinator (``loyalty.redemption-steps``, parsed already:
    the topic also carries misplaced station messages), validated like any input."""
    step = _one_of(obj, "step", REPLY_STEPS)
    reply: dict[str, Any] = {
        "step": step,
        "request_id": _identifier(obj, "request_id"),
        "occurred_at": _timestamp_text(obj, "occurred_at"),
    }
    reason = _reason(obj, required=step in ("refused", "unavailable"))
    if reason is not None:
        reply["reason"] = reason
    return reply


def decode_referral_op(value: bytes | None) -> dict[str, Any]:
    """A message of the referral registry (``loyalty.referrals``, key code): ``register``
    (member_id), ``erase``, or ``claim`` (member_id, signup_event_id, occurred_at)."""
    obj = load_object(value, MAX_COMMAND_BYTES)
    op = _one_of(obj, "op", REFERRAL_OPS)
    decoded: dict[str, Any] = {"op": op, "code": _code(obj)}
    if op != "erase":
        decoded["member_id"] = _identifier(obj, "member_id")
    if op == "claim":
        decoded["signup_event_id"] = _identifier(obj, "signup_event_id")
        decoded["occurred_at"] = _timestamp_text(obj, "occurred_at")
    return decoded


MAX_QUANTITY = 100


def decode_redemption(value: bytes | None, max_bytes: int) -> RedemptionMessage:
    """Decode and validate one redemption request, fulfilment or cancellation. Unknown
    extra fields are ignored."""
    obj = load_object(value, max_bytes)
    kind = obj.get("type", REDEMPTION_REQUEST)
    if kind not in REDEMPTION_TYPES:
        raise InvalidEvent(
            INVALID_VALUE, f"field 'type' must be one of {', '.join(REDEMPTION_TYPES)}"
        )
    request_id = _identifier(obj, "request_id")
    station_id = _identifier(obj, "station_id")
    occurred_at = parse_timestamp(_require(obj, "occurred_at"), "occurred_at")
    if kind != REDEMPTION_REQUEST:
        return RedemptionMessage(kind, request_id, station_id, occurred_at)  # type: ignore[arg-type]
    quantity = _require(obj, "quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidEvent(INVALID_TYPE, "field 'quantity' must be a whole number")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidEvent(OUT_OF_RANGE, f"field 'quantity' must be 1-{MAX_QUANTITY}")
    return RedemptionMessage(
        kind,
        request_id,  # type: ignore[arg-type]
        station_id,  # type: ignore[arg-type]
        occurred_at,
        member_id=_identifier(obj, "member_id"),
        reward_id=_identifier(obj, "reward_id"),
        quantity=quantity,
    )
