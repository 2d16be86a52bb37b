"""Strict decoding of raw Kafka values into input records.

Every rejection raises :class:`InvalidEvent` with a machine-readable ``reason`` (part of
the public contract: it is the ``reason`` of the dead letter) and a human-readable message.
Every bound of the contract (README "Event contract", ``schemas/json/``) is checked here,
so nothing a producer writes can make a later step fail: ids follow the one id grammar
(``schemas.ids``), every string has a length, every number a range and a precision, and
timestamps and dates lie between 2000-01-01 and the worker's clock (plus a skew).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from loyalty.schemas.events import (
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
from loyalty.schemas.ids import ID_PATTERN, MAX_ID_LENGTH, is_typed_code

# Dead-letter reasons produced here.
TOO_LARGE = "too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
DUPLICATE_KEY = "duplicate_key"
MISSING_FIELD = "missing_field"
INVALID_TYPE = "invalid_type"
OUT_OF_RANGE = "out_of_range"
INVALID_VALUE = "invalid_value"
INVALID_TIMESTAMP = "invalid_timestamp"
NAIVE_TIMESTAMP = "naive_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"

MIN_LITERS = 0.001
MAX_LITERS = 1000
MAX_AMOUNT = 1_000_000
MAX_DECIMALS = 3
"""Digits after the decimal point of ``liters`` and ``amount``."""
MAX_FUEL_TYPE_LENGTH = 32
MAX_COUPON_CODES = 10
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No event time or daily-job date is before this."""
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""Nor at or after this, whatever the clock: every later step can still add a day or an
offset to an event time without leaving ``datetime``'s range."""
_EARLIEST_S = EARLIEST.timestamp()
_LATEST_S = LATEST.timestamp()
_MINUTE = timedelta(minutes=1)

_is_identifier = re.compile(ID_PATTERN).fullmatch
"""``schemas.ids.is_identifier`` without a call in between: four ids per transaction."""
_FUEL_TYPE = re.compile(r"[A-Za-z0-9._-]+")
_CURRENCY = re.compile(r"[A-Z]{3}")
_LOCALE = re.compile(r"[A-Za-z0-9_-]+")
_PHONE = re.compile(r"[0-9+ ()-]+")
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],]')
"""A JSON string, or a bracket or comma: what tells a key from a value."""


class InvalidEvent(ValueError):
    """An input value that breaks the contract."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def load_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parse one raw value into a JSON object, or raise :class:`InvalidEvent`. A key that
    appears twice in one object, at any depth, is refused (orjson would keep the last)."""
    if value is None:
        raise InvalidEvent(INVALID_JSON, "message has no value (null / tombstone)")
    if len(value) > max_bytes:
        raise InvalidEvent(TOO_LARGE, f"value is {len(value)} bytes; the limit is {max_bytes}")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        parsed = _load_beyond_double(value, error)
    if not isinstance(parsed, dict):
        raise InvalidEvent(NOT_AN_OBJECT, f"value is a JSON {type(parsed).__name__}, not an object")
    if _has_duplicate_key(value, parsed):
        key = _first_duplicate_key(value.decode())
        raise InvalidEvent(DUPLICATE_KEY, f"key {key!r} appears twice in one object")
    return parsed


def _has_duplicate_key(value: bytes, parsed: Any) -> bool:
    """Whether some object of ``value`` repeats a key, without a second parse.

    Without a backslash in ``value``, a string's bytes are its text, so every ``:`` of
    ``value`` is either inside a string or follows a key. orjson writes ``parsed`` back
    with one ``:`` per key it kept and the same strings: the two counts are equal exactly
    when no key was dropped, that is when no object repeats a key. With a backslash (or
    nested deeper than orjson writes), the keys are read one by one."""
    if value.find(b"\\") < 0:
        try:
            written = orjson.dumps(parsed)
        except orjson.JSONEncodeError:  # deeper than orjson writes (254), or a lone surrogate
            return _first_duplicate_key(value.decode()) is not None
        return value.count(b":") != written.count(b":")
    return _first_duplicate_key(value.decode()) is not None


def _first_duplicate_key(text: str) -> str | None:
    """The first key that an object of ``text`` (valid JSON) repeats, or None."""
    objects: list[set[str] | None] = []  # the keys seen in each open object; None: array
    key_next = False
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            if key_next and (keys := objects[-1]) is not None:
                key = json.loads(token) if "\\" in token else token[1:-1]
                if key in keys:
                    return str(key)
                keys.add(key)
                key_next = False
        elif first == "{":
            objects.append(set())
            key_next = True
        elif first == "[":
            objects.append(None)
            key_next = False
        elif first == ",":
            key_next = objects[-1] is not None
        else:
            objects.pop()
            key_next = False
    return None


def _load_beyond_double(value: bytes, error: orjson.JSONDecodeError) -> Any:
    """``value`` orjson refused: not UTF-8, not JSON, or JSON with a number beyond a double
    (``1e400``, an integer of 400 digits), which is read as an infinity here so that the
    field it is in is ``out_of_range`` (and an unknown field is still ignored)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        raise InvalidEvent(INVALID_UTF8, f"value is not UTF-8: {utf8_error}") from None
    if "infinity" not in str(error):
        raise InvalidEvent(INVALID_JSON, f"value is not JSON: {error}") from None
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as json_error:
        raise InvalidEvent(INVALID_JSON, f"value is not JSON: {json_error}") from None


def _parse_int(text: str) -> int | float:
    # int() refuses more than 4,300 digits; anything beyond 20 digits is out of every range.
    return int(text) if len(text) <= 20 else float(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _require(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent(MISSING_FIELD, f"field '{name}' is required")
    return value


def _identifier(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    """An id of the one grammar (``schemas.ids``)."""
    value = _require(obj, name) if required else obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a string")
    if _is_identifier(value) is not None:
        return value
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be 1-{MAX_ID_LENGTH} characters")
    raise InvalidEvent(
        INVALID_VALUE,
        f"field '{name}' may hold only ASCII letters, digits and . _ : @ + -, "
        "starting with a letter or digit",
    )


def _text(obj: dict[str, Any], name: str, default: str | None = None) -> str:
    value = obj.get(name)
    if value is None:
        if default is None:
            raise InvalidEvent(MISSING_FIELD, f"field '{name}' is required")
        return default
    if not isinstance(value, str) or not value:
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a non-empty string")
    return value


def _fuel_type(obj: dict[str, Any]) -> str:
    value = _text(obj, "fuel_type")
    if len(value) > MAX_FUEL_TYPE_LENGTH:
        raise InvalidEvent(
            OUT_OF_RANGE, f"field 'fuel_type' must be at most {MAX_FUEL_TYPE_LENGTH} characters"
        )
    if _FUEL_TYPE.fullmatch(value) is None:
        raise InvalidEvent(
            INVALID_VALUE, "field 'fuel_type' may hold only ASCII letters, digits and . _ -"
        )
    return value


def _currency(obj: dict[str, Any]) -> str:
    value = _text(obj, "currency", default="EUR")
    if _CURRENCY.fullmatch(value) is not None:
        return value
    if len(value) != 3:
        raise InvalidEvent(OUT_OF_RANGE, "field 'currency' must be 3 letters (ISO 4217)")
    raise InvalidEvent(INVALID_VALUE, "field 'currency' must be 3 upper-case ASCII letters")


def _coupon_codes(obj: dict[str, Any]) -> tuple[str, ...]:
    codes = obj.get("coupon_codes")
    if codes is None:
        return ()
    if not isinstance(codes, list) or not all(isinstance(code, str) and code for code in codes):
        raise InvalidEvent(INVALID_TYPE, "field 'coupon_codes' must be a list of strings")
    if len(codes) > MAX_COUPON_CODES:
        raise InvalidEvent(
            OUT_OF_RANGE, f"field 'coupon_codes' holds at most {MAX_COUPON_CODES} codes"
        )
    for code in codes:
        _check_typed_code(code, "coupon_codes")
    return tuple(codes)


def _check_typed_code(code: str, name: str) -> None:
    if len(code) > MAX_ID_LENGTH:
        raise InvalidEvent(OUT_OF_RANGE, f"a code of '{name}' is longer than {MAX_ID_LENGTH}")
    if not is_typed_code(code):
        raise InvalidEvent(
            INVALID_VALUE,
            f"a code of '{name}' may hold only ASCII letters, digits, spaces and . _ : @ + -, "
            "starting with a letter or digit",
        )


def _number(obj: dict[str, Any], name: str, low: float, high: float) -> Decimal:
    """A JSON number from ``low`` to ``high`` with at most MAX_DECIMALS decimals, as the
    exact decimal of its shortest spelling."""
    value = _require(obj, name)
    # bool is an int subclass in Python; true/false are not numbers in the contract.
    kind = type(value)
    if kind is int:
        if not low <= value <= high:  # exact for any int, however large
            raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be from {low} to {high}")
        return Decimal(value)
    if kind is not float:
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a number")
    # NaN and infinities fail here and never reach Decimal.
    if not low <= value <= high:
        raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be from {low} to {high}")
    # str() of a float is its shortest round-trip form, so Decimal gets the JSON digits;
    # + 0.0 turns -0.0 into 0.0. Within the bounds it is written with a point: a float is
    # written with an exponent from 1e16 up or under 1e-4, and those under 1e-4 have more
    # than 3 decimals.
    text = str(value + 0.0)
    point = text.find(".")
    if point < 0 or len(text) - point - 1 > MAX_DECIMALS:
        raise InvalidEvent(
            OUT_OF_RANGE, f"field '{name}' has more than {MAX_DECIMALS} decimals: {text}"
        )
    return Decimal(text)


def parse_timestamp(value: Any, name: str) -> datetime:
    """An ISO-8601 timestamp with a UTC offset of whole minutes, from 2000-01-01T00:00:00Z
    and before the year 9999; naive timestamps are rejected."""
    return _timestamp(value, name)[0]


def _timestamp(value: Any, name: str) -> tuple[datetime, float]:
    """:func:`parse_timestamp` and its epoch seconds."""
    if not isinstance(value, str):
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(
            INVALID_TIMESTAMP, f"field '{name}' is not ISO-8601: {value!r}"
        ) from None
    offset = parsed.utcoffset()
    if offset is None:
        raise InvalidEvent(NAIVE_TIMESTAMP, f"field '{name}' has no UTC offset: {value!r}")
    if offset % _MINUTE:
        # ISO 8601 and RFC 3339 offsets are whole minutes; Python also reads seconds, which
        # the outputs would carry on (`+01:00:30`), outside their published pattern.
        raise InvalidEvent(INVALID_TIMESTAMP, f"field '{name}' has an offset of seconds: {value!r}")
    # timestamp() of an aware datetime is a difference: no overflow for year 1 or 9999.
    seconds = parsed.timestamp()
    if not _EARLIEST_S <= seconds < _LATEST_S:
        raise InvalidEvent(
            OUT_OF_RANGE,
            f"field '{name}' must be from 2000-01-01T00:00:00Z, before 9999: {value!r}",
        )
    return parsed, seconds


def _occurred_at(obj: dict[str, Any]) -> tuple[datetime, float]:
    """The event time and its epoch seconds."""
    return _timestamp(_require(obj, "occurred_at"), "occurred_at")


def _future(obj: dict[str, Any]) -> InvalidEvent:
    """An event time later than the worker's clock plus the allowed skew. Checked once the
    rest of the record is known to be well formed, so a malformed record is reported for
    its shape."""
    return InvalidEvent(
        FUTURE_TIMESTAMP,
        f"field 'occurred_at' is later than the worker's clock allows: {obj['occurred_at']}",
    )


def decode_transaction(
    value: bytes | None, max_bytes: int, *, not_after_ms: int | None = None
) -> Transaction:
    """Decode and validate one POS transaction. Unknown extra fields are ignored; an
    ``occurred_at`` later than ``not_after_ms`` (epoch ms, when given) is refused."""
    obj = load_object(value, max_bytes)
    transaction_id = _identifier(obj, "transaction_id")
    member_id = _identifier(obj, "member_id")
    kind = obj.get("type", SALE)
    if kind not in TRANSACTION_TYPES:
        raise InvalidEvent(INVALID_VALUE, f"field 'type' must be one of {TRANSACTION_TYPES}")
    liters = _number(obj, "liters", MIN_LITERS, MAX_LITERS)
    amount = _number(obj, "amount", 0, MAX_AMOUNT)
    original = _identifier(obj, "original_transaction_id", required=kind != SALE)
    station_id = _identifier(obj, "station_id")
    occurred_at, seconds = _occurred_at(obj)
    transaction = Transaction(
        transaction_id=transaction_id,  # type: ignore[arg-type]
        member_id=member_id,  # type: ignore[arg-type]
        station_id=station_id,  # type: ignore[arg-type]
        occurred_at=occurred_at,
        fuel_type=_fuel_type(obj),
        liters=liters,
        amount=amount,
        type=kind,
        currency=_currency(obj),
        original_transaction_id=original,
        coupon_codes=_coupon_codes(obj),
    )
    if not_after_ms is not None and seconds * 1000 > not_after_ms:
        raise _future(obj)
    return transaction


MAX_LOCALE_LENGTH = 16
MIN_LOCALE_LENGTH = 2
MAX_CONTACT_LENGTH = 254
MIN_EMAIL_LENGTH = 3
MAX_PHONE_LENGTH = 32


def _optional_text(obj: dict[str, Any], name: str, max_length: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(INVALID_TYPE, f"field '{name}' must be a non-empty string")
    if len(value) > max_length:
        raise InvalidEvent(OUT_OF_RANGE, f"field '{name}' must be at most {max_length} characters")
    return value


def _locale(obj: dict[str, Any]) -> str | None:
    locale = _optional_text(obj, "locale", MAX_LOCALE_LENGTH)
    if locale is None:
        return None
    if len(locale) < MIN_LOCALE_LENGTH:
        raise InvalidEvent(
            OUT_OF_RANGE, f"field 'locale' must be {MIN_LOCALE_LENGTH}-16 characters"
        )
    if _LOCALE.fullmatch(locale) is None:
        raise InvalidEvent(
            INVALID_VALUE, "field 'locale' may hold only ASCII letters, digits, '-' and '_'"
        )
    return locale


def _email(obj: dict[str, Any]) -> str | None:
    email = _optional_text(obj, "email", MAX_CONTACT_LENGTH)
    if email is None:
        return None
    if len(email) < MIN_EMAIL_LENGTH:
        raise InvalidEvent(OUT_OF_RANGE, f"field 'email' must be {MIN_EMAIL_LENGTH}-254 characters")
    # isprintable() is False for control, format (U+200B, U+202E) and separator characters
    # but the ASCII space, which is refused on its own.
    if "@" not in email or " " in email or not email.isprintable():
        raise InvalidEvent(
            INVALID_VALUE, "field 'email' is not an e-mail address (an '@', no whitespace)"
        )
    return email


def _phone(obj: dict[str, Any]) -> str | None:
    phone = _optional_text(obj, "phone", MAX_PHONE_LENGTH)
    if phone is not None and _PHONE.fullmatch(phone) is None:
        raise InvalidEvent(
            INVALID_VALUE, "field 'phone' may hold only digits, '+', spaces, '-', '(' and ')'"
        )
    return phone


def _referral_code(obj: dict[str, Any]) -> str | None:
    code = _optional_text(obj, "referral_code", MAX_ID_LENGTH)
    if code is not None:
        _check_typed_code(code, "referral_code")
    return code


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


def decode_member_event(
    value: bytes | None, max_bytes: int, *, not_after_ms: int | None = None
) -> MemberEvent:
    """Decode and validate one member event. Unknown extra fields are ignored; an
    ``occurred_at`` later than ``not_after_ms`` (epoch ms, when given) is refused."""
    obj = load_object(value, max_bytes)
    event_id = _identifier(obj, "event_id")
    member_id = _identifier(obj, "member_id")
    kind = _require(obj, "type")
    if kind not in MEMBER_EVENT_TYPES:
        raise InvalidEvent(INVALID_VALUE, f"field 'type' must be one of {MEMBER_EVENT_TYPES}")
    email = _email(obj)
    occurred_at, seconds = _occurred_at(obj)
    event = MemberEvent(
        event_id=event_id,  # type: ignore[arg-type]
        member_id=member_id,  # type: ignore[arg-type]
        type=kind,
        occurred_at=occurred_at,
        birth_date=_birth_date(obj),
        locale=_locale(obj),
        referral_code=_referral_code(obj),
        marketing_consent=_marketing_consent(obj),
        email=email,
        phone=_phone(obj),
    )
    if not_after_ms is not None and seconds * 1000 > not_after_ms:
        raise _future(obj)
    return event


EARLIEST_DAILY_DATE = EARLIEST.date()


def latest_daily_date(now_ms: int, timezone: str) -> date:
    """The last date a daily job may be run for at ``now_ms``: tomorrow in ``timezone``
    (the program's time zone)."""
    today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone)).date()
    return today + timedelta(days=1)


def check_daily_date(day: date, latest: date) -> date:
    """``day`` when a daily job may run for it: from 2000-01-01 to ``latest``
    (:func:`latest_daily_date`); a later date would expire points that are not due."""
    if not EARLIEST_DAILY_DATE <= day <= latest:
        raise InvalidEvent(
            OUT_OF_RANGE,
            f"daily-job date {day.isoformat()} is not from {EARLIEST_DAILY_DATE.isoformat()} "
            f"to {latest.isoformat()} (tomorrow in the program's time zone)",
        )
    return day


def decode_daily_command(value: bytes | None, latest: date) -> date:
    """The date of a daily-job command (``{"command": "daily", "date": "YYYY-MM-DD"}``),
    not after ``latest`` (:func:`latest_daily_date`)."""
    obj = load_object(value, 4096)
    if obj.get("command") != "daily":
        raise InvalidEvent(INVALID_VALUE, "field 'command' must be 'daily'")
    raw = _require(obj, "date")
    try:
        day = date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise InvalidEvent(INVALID_VALUE, f"field 'date' is not YYYY-MM-DD: {raw!r}") from None
    return check_daily_date(day, latest)


# Internal topics (written by the engine) are validated like inputs: anyone who can write
# to Kafka can write to them, and a forged or corrupt command must be dead-lettered, not
# trusted. Their value names are the saga's and the referral agent's (core.saga,
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
    hold the member has is a rule of ``core.accounts``."""
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


def _quantity(obj: dict[str, Any]) -> int:
    quantity = _require(obj, "quantity")
    kind = type(quantity)  # bool is an int subclass; true/false are not numbers here
    if kind is not int and kind is not float:
        raise InvalidEvent(INVALID_TYPE, "field 'quantity' must be a whole number")
    # A float is out of range when it is (NaN, infinities and 20-digit integers included),
    # otherwise it was written with a fraction or an exponent.
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidEvent(OUT_OF_RANGE, f"field 'quantity' must be 1-{MAX_QUANTITY}")
    if kind is float:
        raise InvalidEvent(INVALID_TYPE, "field 'quantity' must be a whole number")
    return int(quantity)


def decode_redemption(
    value: bytes | None, max_bytes: int, *, not_after_ms: int | None = None
) -> RedemptionMessage:
    """Decode and validate one redemption request, fulfilment or cancellation. Unknown
    extra fields are ignored; an ``occurred_at`` later than ``not_after_ms`` (epoch ms,
    when given) is refused."""
    obj = load_object(value, max_bytes)
    kind = obj.get("type", REDEMPTION_REQUEST)
    if kind not in REDEMPTION_TYPES:
        raise InvalidEvent(
            INVALID_VALUE, f"field 'type' must be one of {', '.join(REDEMPTION_TYPES)}"
        )
    request_id = _identifier(obj, "request_id")
    station_id = _identifier(obj, "station_id")
    occurred_at, seconds = _occurred_at(obj)
    if kind != REDEMPTION_REQUEST:
        message = RedemptionMessage(kind, request_id, station_id, occurred_at)  # type: ignore[arg-type]
    else:
        quantity = _quantity(obj)
        message = RedemptionMessage(
            kind,
            request_id,  # type: ignore[arg-type]
            station_id,  # type: ignore[arg-type]
            occurred_at,
            member_id=_identifier(obj, "member_id"),
            reward_id=_identifier(obj, "reward_id"),
            quantity=quantity,
        )
    if not_after_ms is not None and seconds * 1000 > not_after_ms:
        raise _future(obj)
    return message
