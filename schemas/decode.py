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
    MEMBER_EVENT_TYPES,
    REDEMPTION_REQUEST,
    REDEMPTION_TYPES,
    SALE,
    TRANSACTION_TYPES,
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


def decode_member_command(value: bytes | None) -> ReferralOutcome | RedemptionStep:
    """An internal command for a member's partition (written by the engine itself): a
    referral outcome, or a redemption step."""
    obj = load_object(value, 16384)
    if "redemption" in obj:
        return RedemptionStep(
            step=obj["redemption"],
            request_id=obj["request_id"],
            member_id=obj["member_id"],
            reward_id=obj["reward_id"],
            quantity=obj["quantity"],
            points=obj["points"],
            station_id=obj["station_id"],
            requested_at=obj["requested_at"],
            occurred_at=parse_timestamp(obj["occurred_at"], "occurred_at"),
            reason=obj.get("reason"),
            per_member_limit=obj.get("per_member_limit"),
            reward_name=obj.get("reward_name"),
        )
    return ReferralOutcome(
        member_id=_identifier(obj, "member_id"),  # type: ignore[arg-type]
        role=_text(obj, "role"),
        signup_event_id=_identifier(obj, "signup_event_id"),  # type: ignore[arg-type]
        code=_text(obj, "code"),
        status=_text(obj, "status"),
        occurred_at=parse_timestamp(_require(obj, "occurred_at"), "occurred_at"),
    )


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
