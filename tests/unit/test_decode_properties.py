"""Properties of the decoders (hypothesis): no input makes them fail in another way than a
documented dead-letter reason, valid input keeps its values, and a key written twice is
always ``duplicate_key``.

The hostile values are written as raw JSON text, so they include what no serializer
produces: numbers beyond a double, ``NaN``, 5,000-digit integers, keys written twice,
escapes, nesting a thousand levels deep. Examples are bounded so the file runs in seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty.schemas.decode import (
    InvalidEvent,
    decode_daily_command,
    decode_member_event,
    decode_redemption,
    decode_transaction,
    load_object,
)
from loyalty.schemas.ids import ID_PATTERN, TYPED_CODE_PATTERN

LIMIT = 65_536
LATEST = date(2026, 12, 5)
NOT_AFTER_MS = 1_893_456_000_000  # 2030-01-01T00:00:00Z
DEAD_LETTER_SCHEMA = Path(__file__).resolve().parents[2] / "schemas/json/dead_letter.schema.json"
DOCUMENTED_REASONS = set(
    json.loads(DEAD_LETTER_SCHEMA.read_text(encoding="utf-8"))["properties"]["reason"]["examples"]
)

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _daily(value: bytes | None, max_bytes: int, **options: Any) -> date:
    return decode_daily_command(value, LATEST)


def _load(value: bytes | None, max_bytes: int, **options: Any) -> dict[str, Any]:
    return load_object(value, max_bytes)


DECODERS = [decode_transaction, decode_member_event, decode_redemption, _daily, _load]


def assert_decodes_or_documented(raw: bytes) -> None:
    """Each decoder returns a record or raises InvalidEvent with a documented reason; any
    other exception fails the test (hypothesis shows the input)."""
    for decoder in DECODERS:
        for options in ({}, {"not_after_ms": NOT_AFTER_MS}):
            try:
                decoder(raw, LIMIT, **options)
            except InvalidEvent as error:
                assert error.reason in DOCUMENTED_REASONS, (decoder, error.reason)
                assert error.message


# --- hostile JSON text --------------------------------------------------------------------

HOSTILE_CHARACTERS = '\x00\x01\x1f\x7f\u00a0\u00e9\u200b\u202e\u2028\ufeff\U0001f600 \t\n"\\:/@-'
hostile_text = st.one_of(
    st.text(alphabet=st.sampled_from(HOSTILE_CHARACTERS + "aZ09._"), max_size=12),
    st.text(max_size=8),
    st.sampled_from(["", "a" * 65, "x" * 5000, "2026-01-05T08:07:31Z", "9999-12-31", "sale"]),
)
NUMBER_SPELLINGS = [
    "0",
    "-0",
    "-0.0",
    "1e-300",
    "5e-324",
    "1e400",
    "-1e400",
    "1E+309",
    "1e18",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1" + "0" * 400,
    "-" + "9" * 5000,
    "0.0000000000000000000001",
    "1000.0001",
]
NOT_JSON_SPELLINGS = ["NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x10"]


def _string(text: str, ascii_only: bool) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)


json_scalar = st.one_of(
    st.sampled_from(NUMBER_SPELLINGS),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(_string, hostile_text, st.booleans()),
    st.sampled_from(["true", "false", "null"]),
)
"""Valid JSON, whatever a parser makes of it."""
scalar = st.one_of(json_scalar, st.sampled_from(NOT_JSON_SPELLINGS))


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"


FIELD_NAMES = [
    "transaction_id",
    "member_id",
    "station_id",
    "occurred_at",
    "fuel_type",
    "liters",
    "amount",
    "type",
    "currency",
    "original_transaction_id",
    "coupon_codes",
    "event_id",
    "birth_date",
    "locale",
    "referral_code",
    "consents",
    "marketing",
    "email",
    "phone",
    "request_id",
    "reward_id",
    "quantity",
    "command",
    "date",
]
key_text = st.one_of(st.sampled_from(FIELD_NAMES), hostile_text).map(json.dumps)


def _nested(leaves: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
            st.lists(st.tuples(key_text, inner), max_size=4).map(_object),
        ),
        max_leaves=12,
    )


fragment = _nested(scalar)
json_fragment = _nested(json_scalar)
"""Valid JSON but for a key an object may repeat."""


@st.composite
def deep(draw: st.DrawFn) -> str:
    """A value nested up to 1,100 levels (orjson reads 1,024, writes 254)."""
    depth = draw(st.sampled_from([2, 200, 255, 600, 1023, 1100]))
    opener = draw(st.sampled_from(["[", '{"d":']))
    closer = "]" if opener == "[" else "}"
    return opener * depth + draw(scalar) + closer * depth


def _valid_fields() -> dict[str, Any]:
    return {
        "transaction_id": "pos-1",
        "event_id": "crm-1",
        "request_id": "rdm-1",
        "member_id": "M-1",
        "reward_id": "car-wash",
        "station_id": "ST-1",
        "occurred_at": "2026-01-05T09:07:31+01:00",
        "fuel_type": "diesel",
        "liters": 20.5,
        "amount": 34.83,
        "quantity": 1,
        "type": "sale",
        "command": "daily",
        "date": "2026-12-01",
    }


@st.composite
def hostile_object(draw: st.DrawFn) -> bytes:
    """A mostly valid record of every input with some fields replaced by hostile values,
    dropped, repeated or joined by unknown ones, written as raw JSON text."""
    pairs = []
    for name, value in _valid_fields().items():
        choice = draw(st.sampled_from(["keep", "keep", "replace", "drop"]))
        if choice == "keep":
            pairs.append((json.dumps(name), json.dumps(value)))
        elif choice == "replace":
            pairs.append((json.dumps(name), draw(st.one_of(fragment, deep()))))
    pairs += draw(st.lists(st.tuples(key_text, fragment), max_size=3))
    if pairs and draw(st.booleans()):
        key, _ = draw(st.sampled_from(pairs))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(fragment)))
    order = draw(st.permutations(pairs))
    return _object(order).encode()


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_give_a_documented_reason(raw):
    assert_decodes_or_documented(raw)


@FUZZ
@given(st.one_of(fragment, deep()))
def test_arbitrary_json_values_decode_or_give_a_documented_reason(text):
    assert_decodes_or_documented(text.encode())


@FUZZ
@given(hostile_object())
def test_hostile_records_decode_or_give_a_documented_reason(raw):
    assert_decodes_or_documented(raw)


# --- valid transactions keep their values -------------------------------------------------

identifier = st.from_regex(ID_PATTERN, fullmatch=True)
typed_code = st.from_regex(TYPED_CODE_PATTERN, fullmatch=True)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
event_times = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2029, 12, 30)),
    offsets,
)


@st.composite
def valid_transaction(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["sale", "refund"]))
    value: dict[str, Any] = {
        "transaction_id": draw(identifier),
        "member_id": draw(identifier),
        "station_id": draw(identifier),
        "occurred_at": draw(event_times),
        "fuel_type": draw(st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)),
        "liters": draw(st.decimals(Decimal("0.001"), Decimal(1000), places=3)),
        "amount": draw(st.decimals(Decimal(0), Decimal(1_000_000), places=3)),
        "type": kind,
        "currency": draw(st.from_regex(r"[A-Z]{3}", fullmatch=True)),
        "original_transaction_id": draw(identifier) if kind == "refund" else None,
        "coupon_codes": tuple(draw(st.lists(typed_code, max_size=10))),
    }
    return value


def _raw(value: dict[str, Any]) -> bytes:
    """The transaction as a POS writes it: numbers as JSON numbers with their digits."""
    pairs = []
    for name, field in value.items():
        if isinstance(field, Decimal):
            text = str(field)
        elif isinstance(field, datetime):
            text = json.dumps(field.isoformat())
        elif isinstance(field, tuple):
            text = json.dumps(list(field))
        else:
            text = json.dumps(field)
        pairs.append((json.dumps(name), text))
    return _object(pairs).encode()


@settings(max_examples=100, deadline=None)
@given(valid_transaction())
def test_a_valid_transaction_decodes_to_its_values(value):
    decoded = decode_transaction(_raw(value), LIMIT, not_after_ms=NOT_AFTER_MS)
    for name, field in value.items():
        got = getattr(decoded, name)
        assert got == field, name
        if isinstance(field, datetime):
            assert got.utcoffset() == field.utcoffset()


# --- a key written twice ------------------------------------------------------------------


def _spellings(key: str) -> st.SearchStrategy[str]:
    """The key as JSON text, plainly or with one character escaped."""
    escaped = [
        '"' + key[:index] + f"\\u{ord(key[index]):04x}" + key[index + 1 :] + '"'
        for index in range(len(key))
    ]
    return st.sampled_from([json.dumps(key), *escaped])


@st.composite
def twice_written(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A valid input of some topic with one key written a second time, at the top or in a
    nested object, anywhere in its object, with any value."""
    decoder, value = draw(
        st.sampled_from(
            [
                (decode_transaction, {k: v for k, v in _valid_fields().items() if k != "type"}),
                (
                    decode_member_event,
                    {
                        "event_id": "crm-1",
                        "member_id": "M-1",
                        "type": "signup",
                        "occurred_at": "2026-01-03T18:30:00+01:00",
                        "consents": {"marketing": True, "sms": False},
                    },
                ),
                (decode_redemption, _valid_fields() | {"type": "request"}),
            ]
        )
    )
    nested = "consents" in value and draw(st.booleans())
    target = value["consents"] if nested else value
    pairs = [(json.dumps(k), orjson.dumps(v).decode()) for k, v in target.items()]
    key = draw(st.sampled_from(list(target)))
    again = (draw(_spellings(key)), draw(json_fragment))
    pairs.insert(draw(st.integers(0, len(pairs))), again)
    space = draw(st.sampled_from(["", " ", "\n\t"]))
    text = "{" + ",".join(f"{k}{space}:{space}{v}" for k, v in pairs) + "}"
    if nested:
        outer = [(json.dumps(k), orjson.dumps(v).decode()) for k, v in value.items()]
        outer = [(k, text if k == '"consents"' else v) for k, v in outer]
        text = _object(outer)
    return decoder, text.encode()


@settings(max_examples=100, deadline=None)
@given(twice_written())
def test_a_key_written_twice_is_always_a_duplicate_key(case):
    decoder, raw = case
    try:
        decoder(raw, LIMIT)
    except InvalidEvent as error:
        assert error.reason == "duplicate_key", (error.reason, error.message)
    else:
        raise AssertionError(f"accepted {raw!r}")
