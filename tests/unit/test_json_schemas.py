"""The JSON Schema files in ``schemas/json/`` agree with the engine.

Pure tests: no broker, no event loop. The input schemas are checked against the decoders
(``schemas.decode``, the authoritative validators) on tables of payloads; the output
schemas are checked against records rendered by the engine itself.

jsonschema only checks ``format: date-time`` when the optional ``rfc3339-validator``
package is installed. Without it the timestamp ``pattern`` does the work and the case
that only a real date-time checker can catch (an impossible calendar date) is skipped.
``format: date`` (a member's ``birth_date``) needs no extra package.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import inspect
import json
import random
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

import loyalty.agents.batching
import loyalty.core.accounts
import loyalty.core.profile
import loyalty.core.render
import loyalty.core.saga
import loyalty.schemas.outputs
import loyalty.streams.partitioning
from loyalty.agents.accounts import PROCESSING_ERROR
from loyalty.agents.batching import OUTPUT_TOO_LARGE, STATE_TOO_LARGE
from loyalty.agents.deadletters import dead_letter
from loyalty.agents.referrals import claim_status
from loyalty.core import codes, saga
from loyalty.core import coupons as wallet
from loyalty.core.accounts import (
    apply_daily,
    apply_member_event,
    apply_redemption_step,
    apply_referral_outcome,
    apply_transaction,
)
from loyalty.core.program import load_program
from loyalty.core.render import (
    BIRTHDAY,
    COUPON_ISSUED,
    DAILY_SOURCE,
    MISSION_COMPLETED,
    POINTS_EARNED,
    POINTS_EXPIRED,
    POINTS_EXPIRING,
    POINTS_REVERSED,
    REDEMPTION_CANCELLED,
    REDEMPTION_CONFIRMED,
    REDEMPTION_REJECTED,
    REDEMPTION_SOURCE,
    REFERRAL_BONUS_KIND,
    REFERRAL_SOURCE,
    TIER_CHANGED,
    WELCOME,
    WIN_BACK,
    Outputs,
    render_daily,
    render_member_event,
    render_redemption,
    render_referral,
    render_transaction,
)
from loyalty.core.segments import ENTERED, LEFT
from loyalty.schemas import decode
from loyalty.schemas.decode import (
    InvalidEvent,
    decode_member_command,
    decode_member_event,
    decode_redemption,
    decode_transaction,
)
from loyalty.schemas.events import (
    ACCEPTED,
    CANCELLED,
    FULFILLED,
    MEMBER_EVENT_TYPES,
    REDEMPTION_TYPES,
    REFEREE,
    REFERRER,
    TRANSACTION_TYPES,
    UNKNOWN_REFERRAL_CODE,
    MemberEvent,
    RedemptionMessage,
    RedemptionStep,
    ReferralOutcome,
    Transaction,
)
from loyalty.schemas.ids import ID_PATTERN, MAX_ID_LENGTH, TYPED_CODE_PATTERN
from loyalty.schemas.outputs import (
    BIRTHDAY_BONUS,
    COUPON_BONUS,
    EXPIRY,
    FUEL_POINTS,
    MISSION_BONUS,
    REDEMPTION,
    REDEMPTION_REFUND,
    REFERRAL_BONUS,
    REFUND_REVERSAL,
    WELCOME_BONUS,
)
from loyalty.schemas.state import MemberState, decode_state
from loyalty.streams.partitioning import WRONG_PARTITION
from tests.unit.test_boundary import PARTITIONS, TOPICS, account_processor, on_owner
from tests.unit.test_boundary import run as run_batch
from tests.unit.test_redemptions import Bus, Catalog, Reward

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "json"
SCHEMA_NAMES = (
    "transaction",
    "member_event",
    "redemption",
    "ledger_entry",
    "reward_event",
    "notification",
    "segment_event",
    "dead_letter",
)
MAX_BYTES = 65_536
HAS_DATE_TIME_FORMAT = "date-time" in FormatChecker.checkers


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())


# --- 1. The schema files themselves -------------------------------------------------------


def test_the_schema_directory_holds_exactly_the_documented_schemas():
    found = sorted(path.name for path in SCHEMA_DIR.glob("*.schema.json"))
    assert found == sorted(f"{name}.schema.json" for name in SCHEMA_NAMES)


def _properties_without_description(schema: Any, path: str = "#") -> list[str]:
    """Every entry of every ``properties`` map, at any depth, that lacks a description."""
    missing: list[str] = []
    if isinstance(schema, dict):
        # Properties only narrowed inside if/then keep their description at the top level.
        conditional = "/if" in path or "/then" in path
        for name, subschema in schema.get("properties", {}).items():
            if isinstance(subschema, dict) and "description" not in subschema and not conditional:
                missing.append(f"{path}/properties/{name}")
        for key, value in schema.items():
            missing += _properties_without_description(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, item in enumerate(schema):
            missing += _properties_without_description(item, f"{path}/{index}")
    return missing


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_file_is_a_valid_documented_draft_2020_12_schema(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://loyalty-stream.dev/schemas/v1/{name}.schema.json"
    assert schema["title"].strip()
    assert schema["description"].strip()
    assert _properties_without_description(schema) == []
    # The engine always emits / the contract always names every field it documents.
    assert set(schema["properties"]) >= set(schema["required"])


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_examples_are_valid(name):
    schema = load_schema(name)
    assert schema["examples"], "every schema carries at least one example"
    for example in schema["examples"]:
        validator(name).validate(example)


def test_input_examples_are_accepted_by_the_decoders():
    for example in load_schema("transaction")["examples"]:
        decode_transaction(orjson.dumps(example), MAX_BYTES)
    for example in load_schema("member_event")["examples"]:
        decode_member_event(orjson.dumps(example), MAX_BYTES)
    for example in load_schema("redemption")["examples"]:
        decode_redemption(orjson.dumps(example), MAX_BYTES)


# JSON field -> record field, where the decoder reads a nested value into a flat field.
RECORD_FIELD = {"consents": "marketing_consent"}


@pytest.mark.parametrize(
    ("name", "record"), [("transaction", Transaction), ("member_event", MemberEvent)]
)
def test_input_schema_names_exactly_the_fields_the_decoder_reads(name, record):
    """Every decoded field is documented; the required ones are those without a default."""
    schema = load_schema(name)
    fields = dataclasses.fields(record)
    assert {RECORD_FIELD.get(prop, prop) for prop in schema["properties"]} == {
        field.name for field in fields
    }
    assert set(schema["required"]) == {
        field.name
        for field in fields
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    }


def test_redemption_schema_names_exactly_the_fields_the_decoder_reads():
    """Every message has the fields without a default but ``type`` (absent: a request); a
    request also has those the decoder leaves None for a fulfilment or cancellation."""
    schema = load_schema("redemption")
    fields = {field.name: field for field in dataclasses.fields(RedemptionMessage)}
    assert set(schema["properties"]) == set(fields)
    assert set(schema["required"]) == {
        name for name, field in fields.items() if field.default is dataclasses.MISSING
    } - {"type"}
    assert set(schema["else"]["required"]) == {
        name for name, field in fields.items() if field.default is None
    }
    assert schema["if"]["properties"]["type"]["enum"] == [FULFILLED, CANCELLED]


def test_input_type_enums_are_the_engine_types():
    assert load_schema("transaction")["properties"]["type"]["enum"] == list(TRANSACTION_TYPES)
    assert load_schema("member_event")["properties"]["type"]["enum"] == list(MEMBER_EVENT_TYPES)
    assert load_schema("redemption")["properties"]["type"]["enum"] == list(REDEMPTION_TYPES)


# --- 2. Input: the transaction schema agrees with decode_transaction ---------------------

DROP = object()
"""Marker: remove the field from the base payload."""


def sale(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "transaction_id": "pos-0042-20260105-000731",
        "member_id": "M-100234",
        "station_id": "ST-0042",
        "occurred_at": "2026-01-05T09:07:31+01:00",
        "fuel_type": "diesel",
        "liters": 20.5,
        "amount": 34.83,
    }
    for name, value in changes.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def refund(**changes: Any) -> dict[str, Any]:
    base = {
        "transaction_id": "pos-0042-20260107-000112",
        "type": "refund",
        "original_transaction_id": "pos-0042-20260105-000731",
        "occurred_at": "2026-01-07T10:15:00Z",
        "liters": 10,
        "amount": 16.99,
    }
    return sale(**{**base, **changes})


VALID_TRANSACTIONS: dict[str, Any] = {
    "minimal sale (type and currency defaulted)": sale(),
    "explicit sale with every field": sale(
        type="sale", currency="USD", coupon_codes=["SPRING10", "X"], original_transaction_id="t-0"
    ),
    "refund with its original": refund(),
    "unknown extra fields are ignored": sale(pump=7, loyalty_card={"pan": "6001"}, note=None),
    "liters at the upper bound 1000": sale(liters=1000),
    "tiny liters": sale(liters=0.001),
    "integer liters and amount": sale(liters=40, amount=60),
    "amount zero": sale(amount=0),
    "id of exactly 64 characters": sale(transaction_id="t" * 64, member_id="m" * 64),
    "ids with every character of the id grammar": sale(
        transaction_id="Pos.0042_20260105:000731@st+9-x", station_id="9" * 64
    ),
    "liters and amount with 3 decimals": sale(liters=20.125, amount=34.835),
    "amount at the upper bound 1,000,000": sale(amount=1_000_000),
    "fuel_type of 32 characters, upper case and a dot": sale(fuel_type="Diesel.PLUS_" + "x" * 20),
    "10 coupon codes, as typed": sale(
        coupon_codes=["r7zxn-qsdj3", "R7Z XNQ SDJ3", "c" * 64] + ["SPRING10"] * 7
    ),
    "UTC written Z": sale(occurred_at="2026-01-05T08:07:31Z"),
    "early in 2001": sale(occurred_at="2001-01-01T00:00:00+05:00"),
    "negative offset": sale(occurred_at="2026-01-05T03:07:31-05:00"),
    "half-hour offset and fractional seconds": sale(occurred_at="2026-01-05T13:37:31.250+05:30"),
    "nanosecond fraction": sale(occurred_at="2026-01-05T08:07:31.123456789Z"),
    "leap day": sale(occurred_at="2024-02-29T23:59:59+00:00"),
    "null currency takes the default": sale(currency=None),
    "null coupon_codes": sale(coupon_codes=None),
    "empty coupon_codes": sale(coupon_codes=[]),
    "sale with null original_transaction_id": sale(original_transaction_id=None),
}


@pytest.mark.parametrize("payload", VALID_TRANSACTIONS.values(), ids=VALID_TRANSACTIONS.keys())
def test_valid_transaction_passes_decoder_and_schema(payload):
    decoded = decode_transaction(orjson.dumps(payload), MAX_BYTES)
    assert decoded.transaction_id == payload["transaction_id"]
    errors = [error.message for error in validator("transaction").iter_errors(payload)]
    assert errors == []


@dataclass(frozen=True)
class Invalid:
    payload: Any
    reason: str
    """The decoder's InvalidEvent.reason, i.e. the dead-letter reason."""
    field: str | None
    """The field a schema error must point at (None: the whole value)."""


LONG_ID = "x" * 65
HOSTILE_CHARACTERS = {
    "a space": " ",
    "NUL": "\x00",
    "a newline": "\n",
    "U+200B (zero-width space)": "\u200b",
    "U+202E (right-to-left override)": "\u202e",
    "a slash": "/",
}
"""Characters no id may hold (the decoder: invalid_value; the schema: its pattern)."""


def bad_time(occurred_at: str, reason: str) -> Invalid:
    return Invalid(sale(occurred_at=occurred_at), reason, "occurred_at")


INVALID_TRANSACTIONS: dict[str, Invalid] = {
    "coupon_codes false": Invalid(sale(coupon_codes=False), "invalid_type", "coupon_codes"),
    "coupon_codes 0": Invalid(sale(coupon_codes=0), "invalid_type", "coupon_codes"),
    "coupon_codes string": Invalid(sale(coupon_codes=""), "invalid_type", "coupon_codes"),
    "coupon_codes object": Invalid(sale(coupon_codes={}), "invalid_type", "coupon_codes"),
    "missing transaction_id": Invalid(sale(transaction_id=DROP), "missing_field", "transaction_id"),
    "null member_id": Invalid(sale(member_id=None), "missing_field", "member_id"),
    "missing station_id": Invalid(sale(station_id=DROP), "missing_field", "station_id"),
    "missing occurred_at": Invalid(sale(occurred_at=DROP), "missing_field", "occurred_at"),
    "missing fuel_type": Invalid(sale(fuel_type=DROP), "missing_field", "fuel_type"),
    "missing liters": Invalid(sale(liters=DROP), "missing_field", "liters"),
    "missing amount": Invalid(sale(amount=DROP), "missing_field", "amount"),
    "liters as a string": Invalid(sale(liters="20.5"), "invalid_type", "liters"),
    "liters as a boolean": Invalid(sale(liters=True), "invalid_type", "liters"),
    "amount as a string": Invalid(sale(amount="34.83"), "invalid_type", "amount"),
    "numeric transaction_id": Invalid(sale(transaction_id=731), "invalid_type", "transaction_id"),
    "empty station_id": Invalid(sale(station_id=""), "out_of_range", "station_id"),
    "station_id of 65 chars": Invalid(sale(station_id=LONG_ID), "out_of_range", "station_id"),
    "station_id with a space": Invalid(sale(station_id="ST 0042"), "invalid_value", "station_id"),
    "id of 64 non-ASCII code points": Invalid(
        sale(member_id="\u00e9" * 63 + "\U0001f600"), "invalid_value", "member_id"
    ),
    **{
        f"transaction_id with {name}": Invalid(
            sale(transaction_id=f"pos{char}0042"), "invalid_value", "transaction_id"
        )
        for name, char in HOSTILE_CHARACTERS.items()
    },
    "transaction_id starting with -": Invalid(
        sale(transaction_id="-pos-1"), "invalid_value", "transaction_id"
    ),
    "original_transaction_id with U+202E": Invalid(
        refund(original_transaction_id="pos\u202e1"), "invalid_value", "original_transaction_id"
    ),
    "fuel_type of 33 chars": Invalid(sale(fuel_type="d" * 33), "out_of_range", "fuel_type"),
    "fuel_type with a space": Invalid(sale(fuel_type="super plus"), "invalid_value", "fuel_type"),
    "fuel_type with U+200B": Invalid(sale(fuel_type="diesel\u200b"), "invalid_value", "fuel_type"),
    "liters 1e-300": Invalid(sale(liters=1e-300), "out_of_range", "liters"),
    "liters 0.0005": Invalid(sale(liters=0.0005), "out_of_range", "liters"),
    "liters 1e18": Invalid(sale(liters=1e18), "out_of_range", "liters"),
    "amount 1e18": Invalid(sale(amount=1e18), "out_of_range", "amount"),
    "amount 2**64": Invalid(sale(amount=2**64 - 1), "out_of_range", "amount"),
    "amount 1,000,000.5": Invalid(sale(amount=1_000_000.5), "out_of_range", "amount"),
    "currency in lower case": Invalid(sale(currency="eur"), "invalid_value", "currency"),
    "currency of 4 letters": Invalid(sale(currency="EURO"), "out_of_range", "currency"),
    "currency of 1 letter": Invalid(sale(currency="E"), "out_of_range", "currency"),
    "11 coupon codes": Invalid(sale(coupon_codes=["X"] * 11), "out_of_range", "coupon_codes"),
    "coupon code of 65 chars": Invalid(
        sale(coupon_codes=["c" * 65]), "out_of_range", "coupon_codes"
    ),
    "coupon code with NUL": Invalid(
        sale(coupon_codes=["SPRING\x0010"]), "invalid_value", "coupon_codes"
    ),
    "coupon code starting with a space": Invalid(
        sale(coupon_codes=[" SPRING10"]), "invalid_value", "coupon_codes"
    ),
    "fuel_type as a list": Invalid(sale(fuel_type=["diesel"]), "invalid_type", "fuel_type"),
    "empty currency": Invalid(sale(currency=""), "invalid_type", "currency"),
    "coupon_codes as a string": Invalid(
        sale(coupon_codes="SPRING10"), "invalid_type", "coupon_codes"
    ),
    "empty coupon code": Invalid(
        sale(coupon_codes=["SPRING10", ""]), "invalid_type", "coupon_codes"
    ),
    "numeric coupon code": Invalid(sale(coupon_codes=[10]), "invalid_type", "coupon_codes"),
    "occurred_at as epoch number": Invalid(
        sale(occurred_at=1767600451), "invalid_type", "occurred_at"
    ),
    "liters 0": Invalid(sale(liters=0), "out_of_range", "liters"),
    "negative liters": Invalid(sale(liters=-5), "out_of_range", "liters"),
    "liters 1000.5": Invalid(sale(liters=1000.5), "out_of_range", "liters"),
    "negative amount": Invalid(sale(amount=-0.01), "out_of_range", "amount"),
    "transaction_id of 65 chars": Invalid(
        sale(transaction_id=LONG_ID), "out_of_range", "transaction_id"
    ),
    "member_id of 65 chars": Invalid(sale(member_id=LONG_ID), "out_of_range", "member_id"),
    "empty member_id": Invalid(sale(member_id=""), "out_of_range", "member_id"),
    "original_transaction_id of 65 chars": Invalid(
        refund(original_transaction_id=LONG_ID), "out_of_range", "original_transaction_id"
    ),
    "naive timestamp": bad_time("2026-01-05T09:07:31", "naive_timestamp"),
    "naive timestamp with fraction": bad_time("2026-01-05T09:07:31.5", "naive_timestamp"),
    "date only": bad_time("2026-01-05", "naive_timestamp"),
    "not a timestamp": bad_time("yesterday", "invalid_timestamp"),
    "month 13": bad_time("2026-13-05T09:07:31Z", "invalid_timestamp"),
    "hour 24": bad_time("2026-01-05T24:00:00Z", "invalid_timestamp"),
    "leap second": bad_time("2026-12-31T23:59:60Z", "invalid_timestamp"),
    "lower-case t and z": bad_time("2026-01-05t08:07:31z", "invalid_timestamp"),
    "offset of 24 hours": bad_time("2026-01-05T08:07:31+24:00", "invalid_timestamp"),
    # Outputs carry the offset sent; one of seconds would leave their pattern (issue 19).
    "offset with seconds": bad_time("2026-01-05T09:07:31+01:00:30", "invalid_timestamp"),
    "offset with a fraction": bad_time("2026-01-05T09:07:31+01:00:00.5", "invalid_timestamp"),
    "before 2000": bad_time("1999-12-31T23:59:59Z", "out_of_range"),
    "2000 locally, 1999 in UTC": bad_time("2000-01-01T00:30:00+01:00", "out_of_range"),
    "year 1 with a negative offset": bad_time("0001-01-01T00:00:00-05:00", "out_of_range"),
    "year 1 with a positive offset": bad_time("0001-01-01T00:00:00+05:00", "out_of_range"),
    "year 9999 with a negative offset": bad_time("9999-12-31T23:59:59-05:00", "out_of_range"),
    "refund without original": Invalid(
        refund(original_transaction_id=DROP), "missing_field", "original_transaction_id"
    ),
    "refund with null original": Invalid(
        refund(original_transaction_id=None), "missing_field", "original_transaction_id"
    ),
    'type "void"': Invalid(sale(type="void"), "invalid_value", "type"),
    'type "SALE" (case matters)': Invalid(sale(type="SALE"), "invalid_value", "type"),
    "null type": Invalid(sale(type=None), "invalid_value", "type"),
    "value is an array": Invalid([sale()], "not_an_object", None),
    "value is a string": Invalid("sale", "not_an_object", None),
}


def _errors_point_at(errors: list[Any], field: str | None) -> bool:
    if field is None:
        return bool(errors)
    return any(
        field in error.absolute_path
        or f"'{field}' is a required property" in error.message
        or any(field in sub.absolute_path or f"'{field}'" in sub.message for sub in error.context)
        for error in errors
    )


@pytest.mark.parametrize("case", INVALID_TRANSACTIONS.values(), ids=INVALID_TRANSACTIONS.keys())
def test_invalid_transaction_is_rejected_by_decoder_and_schema_for_the_same_reason(case):
    with pytest.raises(InvalidEvent) as raised:
        decode_transaction(orjson.dumps(case.payload), MAX_BYTES)
    assert raised.value.reason == case.reason

    errors = list(validator("transaction").iter_errors(case.payload))
    assert errors, "the schema accepted a payload the decoder rejects"
    assert _errors_point_at(errors, case.field), [error.message for error in errors]


@pytest.mark.skipif(
    not HAS_DATE_TIME_FORMAT,
    reason="rfc3339-validator is not installed, so jsonschema does not check format "
    "date-time; the pattern alone cannot reject impossible calendar dates",
)
@pytest.mark.parametrize("occurred_at", ["2026-02-30T08:00:00Z", "2025-02-29T08:00:00Z"])
def test_impossible_calendar_date_is_rejected_by_decoder_and_date_time_format(occurred_at):
    payload = sale(occurred_at=occurred_at)
    with pytest.raises(InvalidEvent) as raised:
        decode_transaction(orjson.dumps(payload), MAX_BYTES)
    assert raised.value.reason == "invalid_timestamp"
    assert not validator("transaction").is_valid(payload)


def test_decoder_only_limits_are_enforced_by_the_decoder():
    """Not expressible in JSON Schema: raw bytes. The decoder rejects them with these reasons."""
    cases = [
        (b"x" * (MAX_BYTES + 1), "too_large"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (None, "invalid_json"),
    ]
    for raw, reason in cases:
        with pytest.raises(InvalidEvent) as raised:
            decode_transaction(raw, MAX_BYTES)
        assert raised.value.reason == reason


def _described(schema: str, field: str, *phrases: str) -> None:
    description = load_schema(schema)["properties"][field]["description"]
    for phrase in phrases:
        assert phrase in description, (schema, field, phrase)


def test_bounds_json_schema_cannot_express_are_described_and_enforced_by_the_decoder():
    """Valid to a JSON Schema validator, refused by the engine, and said in the description
    (and in schemas/json/README.md): the precision of a number (``multipleOf`` 0.001 is
    unreliable on binary floats), the clock, and a key written twice (a validator sees the
    parsed object, where one of them is gone)."""
    cases = [
        (sale(liters=20.1234), {}, "out_of_range"),
        (sale(amount=34.8351), {}, "out_of_range"),
        (sale(liters=0.0015), {}, "out_of_range"),
        # a second after the worker's clock plus the skew (2026-01-05T08:07:31Z)
        (
            sale(occurred_at="2026-01-05T08:07:32Z"),
            {"not_after_ms": 1_767_600_451_000},
            "future_timestamp",
        ),
    ]
    for payload, options, reason in cases:
        assert validator("transaction").is_valid(payload), payload
        with pytest.raises(InvalidEvent) as raised:
            decode_transaction(orjson.dumps(payload), MAX_BYTES, **options)
        assert raised.value.reason == reason
    # exactly at the limit is accepted
    at_limit = orjson.dumps(sale(occurred_at="2026-01-05T08:07:31Z"))
    decode_transaction(at_limit, MAX_BYTES, not_after_ms=1_767_600_451_000)
    _described("transaction", "liters", "at most 3 decimals", "JSON Schema cannot say")
    _described("transaction", "amount", "at most 3 decimals")
    for name in ("transaction", "member_event", "redemption"):
        _described(name, "occurred_at", "LOYALTY_MAX_FUTURE_SKEW_S", "future_timestamp")

    raw = orjson.dumps(sale(liters=10))[:-1] + b',"liters":900}'
    assert validator("transaction").is_valid(json.loads(raw))  # the last one wins there
    with pytest.raises(InvalidEvent) as raised:
        decode_transaction(raw, MAX_BYTES)
    assert raised.value.reason == "duplicate_key"
    assert "`duplicate_key`" in load_schema("dead_letter")["properties"]["reason"]["description"]


ID_FIELDS = [
    ("transaction", "transaction_id"),
    ("transaction", "member_id"),
    ("transaction", "original_transaction_id"),
    ("transaction", "station_id"),
    ("member_event", "event_id"),
    ("member_event", "member_id"),
    ("redemption", "request_id"),
    ("redemption", "member_id"),
    ("redemption", "reward_id"),
    ("redemption", "station_id"),
]


@pytest.mark.parametrize(("schema", "field"), ID_FIELDS)
def test_every_id_field_has_the_one_id_grammar(schema, field):
    prop = load_schema(schema)["properties"][field]
    assert prop["pattern"] == f"^{ID_PATTERN}$"
    assert (prop["minLength"], prop["maxLength"]) == (1, MAX_ID_LENGTH)
    assert "id grammar" in prop["description"]


def test_typed_codes_have_the_id_grammar_with_spaces():
    coupon = load_schema("transaction")["properties"]["coupon_codes"]
    referral = load_schema("member_event")["properties"]["referral_code"]
    assert coupon["items"]["pattern"] == referral["pattern"] == f"^{TYPED_CODE_PATTERN}$"
    assert coupon["maxItems"] == 10


def test_a_final_newline_passes_python_patterns_but_not_the_decoder():
    """JSON Schema patterns are ECMA-262, where ``$`` ends the string; Python's ``re`` (the
    jsonschema package) also matches ``$`` before one final newline. The engine refuses
    the newline; schemas/json/README.md says so."""
    payload = sale(transaction_id="pos-1\n")
    assert validator("transaction").is_valid(payload)  # a Python-only leniency
    with pytest.raises(InvalidEvent) as raised:
        decode_transaction(orjson.dumps(payload), MAX_BYTES)
    assert raised.value.reason == "invalid_value"
    readme = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    assert "final newline" in readme


# Where the decoder is more lenient than the published contract. The schema must reject
# these (a producer that validates never depends on the leniency). If decode.py is
# tightened, the first assertion fails: move the case to INVALID_TRANSACTIONS.
LENIENT_IN_DECODER: dict[str, dict[str, Any]] = {
    "space instead of T": sale(occurred_at="2026-01-05 08:07:31Z"),
    "ISO basic format": sale(occurred_at="20260105T080731Z"),
    "offset without colon": sale(occurred_at="2026-01-05T09:07:31+0100"),
    "offset hours only": sale(occurred_at="2026-01-05T09:07:31+01"),
    "no seconds": sale(occurred_at="2026-01-05T09:07+01:00"),
    "hour only": sale(occurred_at="2026-01-05T09+01:00"),
    "comma decimal": sale(occurred_at="2026-01-05T08:07:31,5Z"),
    "empty fraction": sale(occurred_at="2026-01-05T08:07:31.Z"),
    "ISO week date": sale(occurred_at="2026-W02-1T08:07:31Z"),
}


@pytest.mark.parametrize("payload", LENIENT_IN_DECODER.values(), ids=LENIENT_IN_DECODER.keys())
def test_schema_is_stricter_where_the_decoder_is_lenient(payload):
    decode_transaction(orjson.dumps(payload), MAX_BYTES)  # accepted today (see report)
    assert not validator("transaction").is_valid(payload)


# --- 2b. Input: the member event schema agrees with decode_member_event ------------------


def member_event(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_id": "crm-20260103-000017",
        "member_id": "M-100234",
        "type": "signup",
        "occurred_at": "2026-01-03T18:30:00+01:00",
    }
    for name, value in changes.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


EMAIL_254 = "a" * 64 + "@" + "b" * 189
PHONE_32 = "+" + "3" * 31

VALID_MEMBER_EVENTS: dict[str, Any] = {
    "minimal signup": member_event(),
    "signup with every field": member_event(
        locale="es",
        birth_date="1990-04-12",
        consents={"marketing": True},
        email="ana@example.com",
        phone="+34600123123",
        referral_code="6FV109NX",
    ),
    "profile_updated": member_event(type="profile_updated", locale="pl", phone="600123123"),
    "newsletter_subscribed": member_event(type="newsletter_subscribed"),
    "consents_changed to false": member_event(
        type="consents_changed", consents={"marketing": False}
    ),
    "erase": member_event(type="erase"),
    "every optional field null": member_event(
        locale=None,
        birth_date=None,
        consents=None,
        email=None,
        phone=None,
        referral_code=None,
    ),
    "consents without marketing": member_event(type="consents_changed", consents={}),
    "null marketing consent": member_event(consents={"marketing": None}),
    "other consents are ignored": member_event(consents={"sms": "yes", "marketing": True}),
    "unknown extra fields are ignored": member_event(source="app", device={"os": "ios"}),
    "ids of exactly 64 characters": member_event(event_id="e" * 64, member_id="m" * 64),
    "locale of 16 characters": member_event(locale="es-ES-u-nu-latn1"),
    "locale of 2 characters, and with an underscore": member_event(locale="es_ES"),
    "locale not checked against a list": member_event(locale="klingon"),
    "email of 254 characters": member_event(email=EMAIL_254),
    "email is only checked for an @ and its characters": member_event(email="@@@"),
    "email with letters of another script": member_event(email="\u00f1and\u00fa@example.es"),
    "phone with spaces, dashes and parentheses": member_event(phone="+34 (600) 123-123"),
    "referral_code as typed": member_event(referral_code="6fv 109-nx"),
    "phone of 32 characters": member_event(phone=PHONE_32),
    "referral_code of 64 characters": member_event(referral_code="r" * 64),
    "leap-day birth_date": member_event(birth_date="2024-02-29"),
    "UTC written Z": member_event(occurred_at="2026-01-03T17:30:00Z"),
    "fractional seconds and negative offset": member_event(
        occurred_at="2026-01-03T14:30:00.250-03:00"
    ),
}


@pytest.mark.parametrize("payload", VALID_MEMBER_EVENTS.values(), ids=VALID_MEMBER_EVENTS.keys())
def test_valid_member_event_passes_decoder_and_schema(payload):
    decoded = decode_member_event(orjson.dumps(payload), MAX_BYTES)
    assert decoded.event_id == payload["event_id"]
    errors = [error.message for error in validator("member_event").iter_errors(payload)]
    assert errors == []


def bad_member_time(occurred_at: Any, reason: str) -> Invalid:
    return Invalid(member_event(occurred_at=occurred_at), reason, "occurred_at")


INVALID_MEMBER_EVENTS: dict[str, Invalid] = {
    "missing event_id": Invalid(member_event(event_id=DROP), "missing_field", "event_id"),
    "null member_id": Invalid(member_event(member_id=None), "missing_field", "member_id"),
    "missing type (no default)": Invalid(member_event(type=DROP), "missing_field", "type"),
    "null type": Invalid(member_event(type=None), "missing_field", "type"),
    "missing occurred_at": Invalid(member_event(occurred_at=DROP), "missing_field", "occurred_at"),
    'type "sale"': Invalid(member_event(type="sale"), "invalid_value", "type"),
    'type "SIGNUP" (case matters)': Invalid(member_event(type="SIGNUP"), "invalid_value", "type"),
    "numeric type": Invalid(member_event(type=1), "invalid_value", "type"),
    "type as a list": Invalid(member_event(type=["signup"]), "invalid_value", "type"),
    "numeric event_id": Invalid(member_event(event_id=17), "invalid_type", "event_id"),
    "event_id of 65 chars": Invalid(member_event(event_id=LONG_ID), "out_of_range", "event_id"),
    "empty member_id": Invalid(member_event(member_id=""), "out_of_range", "member_id"),
    "naive timestamp": bad_member_time("2026-01-03T18:30:00", "naive_timestamp"),
    "not a timestamp": bad_member_time("yesterday", "invalid_timestamp"),
    "occurred_at as epoch number": bad_member_time(1767461400, "invalid_type"),
    "birth_date not zero-padded": Invalid(
        member_event(birth_date="1990-4-12"), "invalid_type", "birth_date"
    ),
    "birth_date as a number": Invalid(
        member_event(birth_date=19900412), "invalid_type", "birth_date"
    ),
    "birth_date with a time": Invalid(
        member_event(birth_date="1990-04-12T00:00:00Z"), "invalid_type", "birth_date"
    ),
    "empty birth_date": Invalid(member_event(birth_date=""), "invalid_type", "birth_date"),
    "birth_date 30 February": Invalid(
        member_event(birth_date="1990-02-30"), "invalid_value", "birth_date"
    ),
    "birth_date month 13": Invalid(
        member_event(birth_date="1990-13-01"), "invalid_value", "birth_date"
    ),
    "birth_date year 0": Invalid(
        member_event(birth_date="0000-01-01"), "invalid_value", "birth_date"
    ),
    "birth_date day first": Invalid(
        member_event(birth_date="12/04/1990"), "invalid_value", "birth_date"
    ),
    "empty locale": Invalid(member_event(locale=""), "invalid_type", "locale"),
    "locale as a list": Invalid(member_event(locale=["es"]), "invalid_type", "locale"),
    "locale of 17 chars": Invalid(member_event(locale="l" * 17), "out_of_range", "locale"),
    "locale of 1 char": Invalid(member_event(locale="e"), "out_of_range", "locale"),
    "non-ASCII locale": Invalid(member_event(locale="\u00e9s"), "invalid_value", "locale"),
    "locale with a space": Invalid(member_event(locale="es ES"), "invalid_value", "locale"),
    "email of 2 chars": Invalid(member_event(email="a@"), "out_of_range", "email"),
    **{
        f"email with {name}": Invalid(
            member_event(email=f"ana{char}@example.com"), "invalid_value", "email"
        )
        for name, char in HOSTILE_CHARACTERS.items()
        if char != "/"
    },
    "email with a no-break space": Invalid(
        member_event(email="ana\u00a0@example.com"), "invalid_value", "email"
    ),
    "phone with letters": Invalid(member_event(phone="+34 600 CALL ME"), "invalid_value", "phone"),
    "phone with a newline": Invalid(member_event(phone="600\n123"), "invalid_value", "phone"),
    "referral_code with U+200B": Invalid(
        member_event(referral_code="6FV1\u200b09NX"), "invalid_value", "referral_code"
    ),
    "event_id with U+202E": Invalid(
        member_event(event_id="crm\u202e-1"), "invalid_value", "event_id"
    ),
    "member_id with NUL": Invalid(member_event(member_id="M\x00-1"), "invalid_value", "member_id"),
    "occurred_at before 2000": bad_member_time("1999-06-01T12:00:00Z", "out_of_range"),
    "empty referral_code": Invalid(member_event(referral_code=""), "invalid_type", "referral_code"),
    "referral_code of 65 chars": Invalid(
        member_event(referral_code=LONG_ID), "out_of_range", "referral_code"
    ),
    "consents true": Invalid(member_event(consents=True), "invalid_type", "consents"),
    "consents as a list": Invalid(member_event(consents=[]), "invalid_type", "consents"),
    "consents as a string": Invalid(member_event(consents="marketing"), "invalid_type", "consents"),
    "marketing consent as a string": Invalid(
        member_event(consents={"marketing": "yes"}), "invalid_type", "marketing"
    ),
    "marketing consent as 1": Invalid(
        member_event(consents={"marketing": 1}), "invalid_type", "marketing"
    ),
    "email without @": Invalid(member_event(email="ana.example.com"), "invalid_value", "email"),
    "empty email": Invalid(member_event(email=""), "invalid_type", "email"),
    "numeric email": Invalid(member_event(email=7), "invalid_type", "email"),
    "email of 255 chars": Invalid(member_event(email=EMAIL_254 + "c"), "out_of_range", "email"),
    "empty phone": Invalid(member_event(phone=""), "invalid_type", "phone"),
    "phone as a number": Invalid(member_event(phone=34600123123), "invalid_type", "phone"),
    "phone of 33 chars": Invalid(member_event(phone=PHONE_32 + "3"), "out_of_range", "phone"),
    "value is an array": Invalid([member_event()], "not_an_object", None),
}


@pytest.mark.parametrize("case", INVALID_MEMBER_EVENTS.values(), ids=INVALID_MEMBER_EVENTS.keys())
def test_invalid_member_event_is_rejected_by_decoder_and_schema_for_the_same_reason(case):
    with pytest.raises(InvalidEvent) as raised:
        decode_member_event(orjson.dumps(case.payload), MAX_BYTES)
    assert raised.value.reason == case.reason

    errors = list(validator("member_event").iter_errors(case.payload))
    assert errors, "the schema accepted a payload the decoder rejects"
    assert _errors_point_at(errors, case.field), [error.message for error in errors]


def test_member_event_decoder_only_limits_are_enforced_by_the_decoder():
    cases = [
        (orjson.dumps(member_event(note="x" * MAX_BYTES)), "too_large"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (None, "invalid_json"),
    ]
    for raw, reason in cases:
        with pytest.raises(InvalidEvent) as raised:
            decode_member_event(raw, MAX_BYTES)
        assert raised.value.reason == reason


# Where decode_member_event is more lenient than the published contract (see
# LENIENT_IN_DECODER): the same timestamp spellings, and ISO week dates as birth dates.
LENIENT_IN_MEMBER_DECODER: dict[str, dict[str, Any]] = {
    **{
        name: member_event(occurred_at=payload["occurred_at"])
        for name, payload in LENIENT_IN_DECODER.items()
    },
    "ISO week date as birth_date": member_event(birth_date="1990-W15-4"),
}


@pytest.mark.parametrize(
    "payload", LENIENT_IN_MEMBER_DECODER.values(), ids=LENIENT_IN_MEMBER_DECODER.keys()
)
def test_member_event_schema_is_stricter_where_the_decoder_is_lenient(payload):
    decode_member_event(orjson.dumps(payload), MAX_BYTES)  # accepted today (see report)
    assert not validator("member_event").is_valid(payload)


# --- 2c. Input: the redemption schema agrees with decode_redemption ----------------------


def redemption(**changes: Any) -> dict[str, Any]:
    """A redemption request (``type`` absent), changed by ``changes``."""
    payload: dict[str, Any] = {
        "request_id": "rdm-0042-20260109-000017",
        "member_id": "M-100234",
        "reward_id": "car-wash",
        "quantity": 1,
        "station_id": "ST-0042",
        "occurred_at": "2026-01-09T17:20:05+01:00",
    }
    for name, value in changes.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def station_report(kind: str, **changes: Any) -> dict[str, Any]:
    """A station's ``fulfilled`` or ``cancelled`` message, changed by ``changes``."""
    base = {"type": kind, "member_id": DROP, "reward_id": DROP, "quantity": DROP}
    return redemption(**{**base, "occurred_at": "2026-01-11T12:03:17+01:00", **changes})


VALID_REDEMPTIONS: dict[str, Any] = {
    "minimal request (type defaulted)": redemption(),
    "explicit request": redemption(type="request", quantity=2),
    "fulfilled": station_report(FULFILLED),
    "cancelled": station_report(CANCELLED),
    "a station message may repeat the request's fields": station_report(
        CANCELLED, member_id="M-100234", reward_id="car-wash", quantity=1
    ),
    "unknown extra fields are ignored": redemption(pos={"lane": 3}, note=None),
    "quantity at the upper bound 100": redemption(quantity=100),
    "ids of exactly 64 characters": redemption(
        request_id="r" * 64, member_id="m" * 64, reward_id="w" * 64, station_id="s" * 64
    ),
    "ids with every character of the id grammar": redemption(
        request_id="rdm.0042_1:x@y+z-1", reward_id="Car-Wash.v2", station_id="ST:0042"
    ),
    "UTC written Z": redemption(occurred_at="2026-01-09T16:20:05Z"),
    "fractional seconds and negative offset": station_report(
        FULFILLED, occurred_at="2026-01-09T12:20:05.250-04:00"
    ),
}


@pytest.mark.parametrize("payload", VALID_REDEMPTIONS.values(), ids=VALID_REDEMPTIONS.keys())
def test_valid_redemption_passes_decoder_and_schema(payload):
    decoded = decode_redemption(orjson.dumps(payload), MAX_BYTES)
    assert decoded.request_id == payload["request_id"]
    assert decoded.type == payload.get("type", "request")
    errors = [error.message for error in validator("redemption").iter_errors(payload)]
    assert errors == []


def bad_redemption_time(occurred_at: Any, reason: str) -> Invalid:
    return Invalid(redemption(occurred_at=occurred_at), reason, "occurred_at")


INVALID_REDEMPTIONS: dict[str, Invalid] = {
    "missing request_id": Invalid(redemption(request_id=DROP), "missing_field", "request_id"),
    "null request_id": Invalid(redemption(request_id=None), "missing_field", "request_id"),
    "missing station_id": Invalid(redemption(station_id=DROP), "missing_field", "station_id"),
    "missing occurred_at": Invalid(redemption(occurred_at=DROP), "missing_field", "occurred_at"),
    "request without member_id": Invalid(redemption(member_id=DROP), "missing_field", "member_id"),
    "request with null member_id": Invalid(
        redemption(member_id=None), "missing_field", "member_id"
    ),
    "request without reward_id": Invalid(redemption(reward_id=DROP), "missing_field", "reward_id"),
    "request without quantity": Invalid(redemption(quantity=DROP), "missing_field", "quantity"),
    "explicit request with null quantity": Invalid(
        redemption(type="request", quantity=None), "missing_field", "quantity"
    ),
    "fulfilled without station_id": Invalid(
        station_report(FULFILLED, station_id=DROP), "missing_field", "station_id"
    ),
    "cancelled without request_id": Invalid(
        station_report(CANCELLED, request_id=DROP), "missing_field", "request_id"
    ),
    "numeric request_id": Invalid(redemption(request_id=17), "invalid_type", "request_id"),
    "numeric station_id": Invalid(redemption(station_id=42), "invalid_type", "station_id"),
    "reward_id as a list": Invalid(redemption(reward_id=["car-wash"]), "invalid_type", "reward_id"),
    "quantity as a string": Invalid(redemption(quantity="1"), "invalid_type", "quantity"),
    "quantity as a boolean": Invalid(redemption(quantity=True), "invalid_type", "quantity"),
    "fractional quantity": Invalid(redemption(quantity=2.5), "invalid_type", "quantity"),
    "quantity as a list": Invalid(redemption(quantity=[1]), "invalid_type", "quantity"),
    "quantity 0": Invalid(redemption(quantity=0), "out_of_range", "quantity"),
    "negative quantity": Invalid(redemption(quantity=-1), "out_of_range", "quantity"),
    "quantity 101": Invalid(redemption(quantity=101), "out_of_range", "quantity"),
    "empty request_id": Invalid(redemption(request_id=""), "out_of_range", "request_id"),
    "request_id of 65 chars": Invalid(redemption(request_id=LONG_ID), "out_of_range", "request_id"),
    "empty station_id": Invalid(redemption(station_id=""), "out_of_range", "station_id"),
    "id of 64 non-ASCII code points": Invalid(
        redemption(reward_id="\u00e9" * 63 + "\U0001f600"), "invalid_value", "reward_id"
    ),
    **{
        f"request_id with {name}": Invalid(
            redemption(request_id=f"rdm{char}1"), "invalid_value", "request_id"
        )
        for name, char in HOSTILE_CHARACTERS.items()
    },
    "station_id with a space": Invalid(
        station_report(FULFILLED, station_id="ST 42"), "invalid_value", "station_id"
    ),
    "member_id with U+200B": Invalid(
        redemption(member_id="M\u200b1"), "invalid_value", "member_id"
    ),
    "quantity 0.5": Invalid(redemption(quantity=0.5), "out_of_range", "quantity"),
    "quantity 1e30": Invalid(redemption(quantity=1e30), "out_of_range", "quantity"),
    "quantity 2**64 - 1": Invalid(redemption(quantity=2**64 - 1), "out_of_range", "quantity"),
    "occurred_at before 2000": bad_redemption_time("1970-01-01T00:00:00Z", "out_of_range"),
    "station_id of 65 chars": Invalid(redemption(station_id=LONG_ID), "out_of_range", "station_id"),
    "member_id of 65 chars": Invalid(redemption(member_id=LONG_ID), "out_of_range", "member_id"),
    "empty reward_id": Invalid(redemption(reward_id=""), "out_of_range", "reward_id"),
    "naive timestamp": bad_redemption_time("2026-01-09T17:20:05", "naive_timestamp"),
    "not a timestamp": bad_redemption_time("tomorrow", "invalid_timestamp"),
    "month 13": bad_redemption_time("2026-13-09T17:20:05Z", "invalid_timestamp"),
    "occurred_at as epoch number": bad_redemption_time(1767975605, "invalid_type"),
    'type "fulfil"': Invalid(redemption(type="fulfil"), "invalid_value", "type"),
    'type "CANCELLED" (case matters)': Invalid(
        station_report("CANCELLED"), "invalid_value", "type"
    ),
    'type "sale"': Invalid(redemption(type="sale"), "invalid_value", "type"),
    "null type": Invalid(redemption(type=None), "invalid_value", "type"),
    "numeric type": Invalid(redemption(type=1), "invalid_value", "type"),
    "type as a list": Invalid(redemption(type=["request"]), "invalid_value", "type"),
    "value is an array": Invalid([redemption()], "not_an_object", None),
    "value is a number": Invalid(17, "not_an_object", None),
}


@pytest.mark.parametrize("case", INVALID_REDEMPTIONS.values(), ids=INVALID_REDEMPTIONS.keys())
def test_invalid_redemption_is_rejected_by_decoder_and_schema_for_the_same_reason(case):
    with pytest.raises(InvalidEvent) as raised:
        decode_redemption(orjson.dumps(case.payload), MAX_BYTES)
    assert raised.value.reason == case.reason

    errors = list(validator("redemption").iter_errors(case.payload))
    assert errors, "the schema accepted a payload the decoder rejects"
    assert _errors_point_at(errors, case.field), [error.message for error in errors]


@pytest.mark.skipif(
    not HAS_DATE_TIME_FORMAT,
    reason="rfc3339-validator is not installed, so jsonschema does not check format date-time",
)
def test_impossible_calendar_date_of_a_redemption_is_rejected_by_decoder_and_format():
    payload = station_report(FULFILLED, occurred_at="2026-02-30T08:00:00Z")
    with pytest.raises(InvalidEvent) as raised:
        decode_redemption(orjson.dumps(payload), MAX_BYTES)
    assert raised.value.reason == "invalid_timestamp"
    assert not validator("redemption").is_valid(payload)


def test_redemption_decoder_only_limits_are_enforced_by_the_decoder():
    cases = [
        (orjson.dumps(redemption(note="x" * MAX_BYTES)), "too_large"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (None, "invalid_json"),
    ]
    for raw, reason in cases:
        with pytest.raises(InvalidEvent) as raised:
            decode_redemption(raw, MAX_BYTES)
        assert raised.value.reason == reason


@pytest.mark.parametrize("spelling", [b"2.0", b"1e0", b"1.0E1"])
def test_a_whole_quantity_written_with_a_fraction_or_exponent_is_only_caught_by_the_decoder(
    spelling,
):
    """JSON Schema cannot tell ``2.0`` from ``2`` (both are the integer 2 to it), while the
    decoder rejects a JSON number with a fraction or exponent as not a whole number. The
    schema's description of ``quantity`` (and the README) say so. If decode.py starts to
    accept them, the first assertion fails: drop this test and the warnings."""
    raw = orjson.dumps(redemption(quantity=7)).replace(b'"quantity":7', b'"quantity":' + spelling)
    with pytest.raises(InvalidEvent) as raised:
        decode_redemption(raw, MAX_BYTES)
    assert raised.value.reason == "invalid_type"
    assert validator("redemption").is_valid(orjson.loads(raw))
    description = load_schema("redemption")["properties"]["quantity"]["description"]
    assert "`2.0` or `2e0`" in description


# Where decode_redemption is more lenient than the published contract (see
# LENIENT_IN_DECODER): the same timestamp spellings, and the request's fields in a
# fulfilment or cancellation, which it does not read at all.
LENIENT_IN_REDEMPTION_DECODER: dict[str, dict[str, Any]] = {
    **{
        name: redemption(occurred_at=payload["occurred_at"])
        for name, payload in LENIENT_IN_DECODER.items()
    },
    "fulfilled with a null member_id": station_report(FULFILLED, member_id=None),
    "cancelled with quantity 0": station_report(CANCELLED, quantity=0),
    "cancelled with a numeric reward_id": station_report(CANCELLED, reward_id=7),
}


@pytest.mark.parametrize(
    "payload",
    LENIENT_IN_REDEMPTION_DECODER.values(),
    ids=LENIENT_IN_REDEMPTION_DECODER.keys(),
)
def test_redemption_schema_is_stricter_where_the_decoder_is_lenient(payload):
    decode_redemption(orjson.dumps(payload), MAX_BYTES)  # accepted today
    assert not validator("redemption").is_valid(payload)


# --- 3. Outputs rendered by the engine validate against their schemas --------------------

PROGRAM = load_program(ROOT / "program" / "default.toml")


def _roundtrip(record: Any) -> Any:
    return orjson.loads(orjson.dumps(record))


def _assert_matches(name: str, record: Any) -> dict[str, Any]:
    """Validate one engine record; its fields are exactly the documented (required) ones."""
    value = _roundtrip(record)
    schema = load_schema(name)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(value)]
    assert errors == [], value
    assert set(value) == set(schema["properties"]) == set(schema["required"])
    return value


MEMBER = "M-100234"
NEWSLETTER_EVENT_ID = "crm-20260104-000231"
NEWSLETTER_COUPON = codes.coupon_code(MEMBER, NEWSLETTER_EVENT_ID)
SOMEONE_ELSES_COUPON = codes.coupon_code("M-200001", "crm-20260104-000999")
AS_TYPED = f"{NEWSLETTER_COUPON[:5]}-{NEWSLETTER_COUPON[5:]}".lower()
"""The newsletter coupon as a cashier might type it."""

SCENARIO: list[tuple[str, dict[str, Any]]] = [
    # 0: enrols the member, Spanish, with marketing consent: welcome (0 points so far)
    ("loyalty.members", member_event(locale="es", consents={"marketing": True})),
    # 1: first subscription: the newsletter coupon, announced (marketing consent given)
    (
        "loyalty.members",
        member_event(
            event_id=NEWSLETTER_EVENT_ID,
            type="newsletter_subscribed",
            occurred_at="2026-01-04T10:00:00+01:00",
        ),
    ),
    # 2: second subscription: no coupon, no notification
    (
        "loyalty.members",
        member_event(
            event_id="crm-20260104-000232",
            type="newsletter_subscribed",
            occurred_at="2026-01-04T10:05:00+01:00",
        ),
    ),
    # 3: first sale: fuel points (volume multiplier), welcome bonus, coupon redeemed
    ("loyalty.transactions", sale(coupon_codes=[AS_TYPED])),
    # 4: earns nothing; an unknown code, the used coupon again, someone else's coupon
    (
        "loyalty.transactions",
        sale(
            transaction_id="small",
            liters=0.5,
            occurred_at="2026-01-06T07:00:00.5-03:00",
            coupon_codes=["SPRING10", NEWSLETTER_COUPON, SOMEONE_ELSES_COUPON],
        ),
    ),
    # 5: third fill in 7 days (mission); 241 + 800 + 150 earned >= 1000: silver
    (
        "loyalty.transactions",
        sale(transaction_id="third-fill", liters=400, occurred_at="2026-01-07T08:00:00+01:00"),
    ),
    # 6: earns with the silver multiplier
    (
        "loyalty.transactions",
        sale(transaction_id="silver-fill", liters=20, occurred_at="2026-01-07T09:00:00+01:00"),
    ),
    # 7, 8: two partial refunds of the first sale, the second capped by what is left
    ("loyalty.transactions", refund(liters=10)),
    ("loyalty.transactions", refund(transaction_id="second-refund", liters=50)),
    # 9: a profile update
    (
        "loyalty.members",
        member_event(
            event_id="app-20260108-000001",
            type="profile_updated",
            occurred_at="2026-01-08T12:00:00Z",
            phone="+34600123123",
        ),
    ),
]

SCENARIO_LEDGER_REASONS = {FUEL_POINTS, WELCOME_BONUS, COUPON_BONUS, MISSION_BONUS, REFUND_REVERSAL}
"""The ledger reasons of sales and refunds: those SCENARIO exercises."""
SCENARIO_NOTIFICATION_KINDS = {
    WELCOME,
    POINTS_EARNED,
    POINTS_REVERSED,
    COUPON_ISSUED,
    TIER_CHANGED,
    MISSION_COMPLETED,
}
"""The notification kinds of sales, refunds and member events: those SCENARIO exercises."""
KNOWN_LEDGER_REASONS = SCENARIO_LEDGER_REASONS | {
    BIRTHDAY_BONUS,
    EXPIRY,
    REFERRAL_BONUS,
    REDEMPTION,
    REDEMPTION_REFUND,
}
"""Every ledger reason the engine emits (checked against core/accounts.py below)."""
KNOWN_NOTIFICATION_KINDS = SCENARIO_NOTIFICATION_KINDS | {
    WIN_BACK,
    BIRTHDAY,
    POINTS_EXPIRING,
    POINTS_EXPIRED,
    REFERRAL_BONUS_KIND,
    REDEMPTION_CONFIRMED,
    REDEMPTION_REJECTED,
    REDEMPTION_CANCELLED,
}
"""Every notification kind the engine emits (checked against core/render.py below)."""
KNOWN_SOURCE_TYPES = {
    *TRANSACTION_TYPES,
    *MEMBER_EVENT_TYPES,
    DAILY_SOURCE,
    REFERRAL_SOURCE,
    REDEMPTION_SOURCE,
}
"""Every reward ``source_type`` the engine emits (checked against core/render.py below)."""
KNOWN_COUPON_STATUSES = {
    wallet.REDEEMED,
    wallet.UNKNOWN_COUPON,
    wallet.EXPIRED_COUPON,
    wallet.COUPON_USED,
    wallet.NOT_OWNER,
}
KNOWN_BONUS_REASONS = {WELCOME_BONUS, COUPON_BONUS, MISSION_BONUS}
KNOWN_REDEMPTION_STATUSES = {saga.CONFIRMED, saga.REJECTED, FULFILLED, CANCELLED}
KNOWN_REJECTION_REASONS = {
    saga.INSUFFICIENT_POINTS,
    saga.OUT_OF_STOCK,
    saga.UNKNOWN_REWARD,
    saga.INACTIVE_REWARD,
    saga.LIMIT_REACHED,
}


def _validated(outputs: Outputs) -> dict[str, Any]:
    """The records of one applied event as JSON, each validated against its schema."""
    return {
        "ledger": [_assert_matches("ledger_entry", e) for e in outputs.ledger],
        "reward": _assert_matches("reward_event", outputs.reward),
        "notifications": [_assert_matches("notification", n) for n in outputs.notifications],
        "segments": [_assert_matches("segment_event", c) for c in outputs.segments],
    }


def _run_scenario() -> tuple[MemberState, list[dict[str, Any]]]:
    """The member's state after SCENARIO and the validated outputs of each of its inputs."""
    state = MemberState()
    rendered = []
    for index, (topic, payload) in enumerate(SCENARIO):
        processed_ms = 1_767_600_452_118 + index
        if topic == "loyalty.members":
            event = decode_member_event(orjson.dumps(payload), MAX_BYTES)
            state, outcome = apply_member_event(state, event, PROGRAM, processed_ms)
            outputs = render_member_event(event, outcome.applied, state, PROGRAM)
        else:
            transaction = decode_transaction(orjson.dumps(payload), MAX_BYTES)
            state, outcome = apply_transaction(state, transaction, PROGRAM, processed_ms)
            outputs = render_transaction(transaction, outcome.applied, state, PROGRAM)
        rendered.append(_validated(outputs))
    return state, rendered


def _kinds(outputs: dict[str, Any]) -> list[str]:
    return [n["kind"] for n in outputs["notifications"]]


def test_rendered_outputs_validate_against_their_schemas():
    _, rendered = _run_scenario()
    rewards = [outputs["reward"] for outputs in rendered]
    notifications = [n for outputs in rendered for n in outputs["notifications"]]
    # Non-vacuous: every known reason, kind and reward shape was exercised.
    assert {e["reason"] for outputs in rendered for e in outputs["ledger"]} == (
        SCENARIO_LEDGER_REASONS
    )
    assert {n["kind"] for n in notifications} == SCENARIO_NOTIFICATION_KINDS
    assert [r["source_type"] for r in rewards] == [
        "signup",
        "newsletter_subscribed",
        "newsletter_subscribed",
        "sale",
        "sale",
        "sale",
        "sale",
        "refund",
        "refund",
        "profile_updated",
    ]
    signup, issued, again, first, small, third, silver, _, capped, updated = rendered

    # Member events: no station, breakdown or reversal; the signup enrols.
    for outputs in (signup, issued, again, updated):
        reward = outputs["reward"]
        assert reward["station_id"] is reward["breakdown"] is reward["reversal"] is None
        assert reward["points"] == 0 and outputs["ledger"] == []
    assert signup["reward"]["enrolled"] and _kinds(signup) == [WELCOME]
    assert signup["notifications"][0]["data"]["points"] == 0
    assert issued["reward"]["coupon_issued"]["code"] == NEWSLETTER_COUPON
    assert _kinds(issued) == [COUPON_ISSUED]
    assert issued["notifications"][0]["data"]["code"] == NEWSLETTER_COUPON
    assert again["reward"]["coupon_issued"] is None and _kinds(again) == []
    assert _kinds(updated) == []

    # Sales: the coupon issued above is redeemed, the other codes are reported.
    assert not first["reward"]["enrolled"]  # the signup enrolled the member
    assert first["reward"]["coupons"] == [
        {"code": NEWSLETTER_COUPON, "status": "redeemed", "benefit": "bonus_points", "value": 100}
    ]
    assert [b["reason"] for b in first["reward"]["breakdown"]["bonuses"]] == [
        WELCOME_BONUS,
        COUPON_BONUS,
    ]
    assert small["reward"]["points"] == 0 and small["reward"]["breakdown"]["multipliers"] == []
    assert [c["status"] for c in small["reward"]["coupons"]] == [
        "unknown_coupon",
        "coupon_used",
        "not_owner",
    ]
    assert _kinds(small) == []
    assert third["reward"]["missions"] == ["three_fills_7d"]
    assert third["reward"]["tier"] == "bronze"
    assert third["reward"]["tier_change"] == {"from": "bronze", "to": "silver"}
    assert _kinds(third) == [POINTS_EARNED, MISSION_COMPLETED, TIER_CHANGED]
    assert silver["reward"]["tier"] == "silver"
    assert "tier:silver" in [m["name"] for m in silver["reward"]["breakdown"]["multipliers"]]
    assert silver["reward"]["coupons"] is None and silver["reward"]["missions"] is None
    reversal = capped["reward"]["reversal"]
    assert reversal["refunded_liters"] < reversal["requested_liters"]

    # Notifications are rendered in the member's locale, with documented data keys only.
    data_keys = set(load_schema("notification")["properties"]["data"]["properties"])
    for notification in notifications:
        assert notification["locale"] == "es"
        template = PROGRAM.templates[notification["kind"]]["es"]
        assert notification["title"] == template.title.format_map(notification["data"])
        assert notification["body"] and set(notification["data"]) <= data_keys

    # The if/then rules reject rewards whose shape contradicts their source_type.
    reward_schema = validator("reward_event")
    for reward in rewards:
        if reward["source_type"] in TRANSACTION_TYPES:
            swapped = {**reward, "breakdown": reward["reversal"], "reversal": reward["breakdown"]}
            assert not reward_schema.is_valid(swapped)
            assert not reward_schema.is_valid({**reward, "station_id": None})
        else:
            assert not reward_schema.is_valid({**reward, "station_id": "ST-0042"})
            breakdown = first["reward"]["breakdown"]
            assert not reward_schema.is_valid({**reward, "breakdown": breakdown})
    unknown = small["reward"]["coupons"][0]
    with_benefit = {**unknown, "benefit": "bonus_points", "value": 100}
    assert not reward_schema.is_valid({**small["reward"], "coupons": [with_benefit]})
    redeemed = dict(first["reward"]["coupons"][0])
    del redeemed["benefit"]
    assert not reward_schema.is_valid({**first["reward"], "coupons": [redeemed]})


# --- 3b. Segments and win-back: the scenario's member lapses and comes back ---------------

ZONE = ZoneInfo(PROGRAM.timezone)
LAST_SALE = date(2026, 1, 7)
"""Day of the scenario's last sales (``third-fill``, ``silver-fill``)."""
LAPSED_ON = LAST_SALE + timedelta(days=30)
"""Day whose daily job finds the member in ``lapsed_30d`` (30 days without a sale)."""
COMEBACK_ID = "pos-0042-20260208-000415"


def _daily_jobs(
    state: MemberState, first: date, last: date, member_id: str = MEMBER
) -> tuple[MemberState, list[tuple[date, dict[str, Any]]]]:
    """The daily jobs of ``first`` to ``last``, each started at 00:05 (program time zone) as
    the crontab starts them; the state and the validated outputs of each job that did
    something for the member."""
    jobs = []
    day = first
    while day <= last:
        started_ms = int(datetime.combine(day, time(0, 5), ZONE).timestamp()) * 1000
        state, outcome = apply_daily(state, day, PROGRAM, started_ms, member_id)
        if outcome is not None:
            outputs = render_daily(member_id, day, outcome.applied, state, PROGRAM)
            jobs.append((day, _validated(outputs)))
        day += timedelta(days=1)
    return state, jobs


@dataclass(frozen=True)
class Lapse:
    """The scenario, the daily jobs until the member has lapsed, and the comeback sale."""

    scenario: list[dict[str, Any]]
    jobs: list[tuple[date, dict[str, Any]]]
    comeback: dict[str, Any]
    state: MemberState

    def everything(self) -> list[dict[str, Any]]:
        return [*self.scenario, *(outputs for _, outputs in self.jobs), self.comeback]


def _lapse_and_come_back() -> Lapse:
    state, scenario = _run_scenario()
    state, jobs = _daily_jobs(state, LAST_SALE + timedelta(days=1), LAPSED_ON)
    code = jobs[-1][1]["reward"]["coupon_issued"]["code"]
    payload = sale(
        transaction_id=COMEBACK_ID,
        occurred_at="2026-02-08T09:30:00+01:00",
        liters=30,
        amount=49.5,
        coupon_codes=[code],
    )
    transaction = decode_transaction(orjson.dumps(payload), MAX_BYTES)
    state, outcome = apply_transaction(state, transaction, PROGRAM, 1_770_539_401_207)
    comeback = _validated(render_transaction(transaction, outcome.applied, state, PROGRAM))
    return Lapse(scenario, jobs, comeback, state)


def _changes(outputs: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["source_event_id"], c["segment"], c["change"]) for c in outputs["segments"]]


def test_segment_events_validate_sale_driven_and_time_driven():
    lapse = _lapse_and_come_back()
    # Sale-driven changes come with the sale that made them, at its event time: diesel is
    # the favourite fuel from the first sale; the 400 L third fill makes 441 L in 30 days
    # and 2 of 3 sales in the morning.
    sale_driven = [change for outputs in lapse.scenario for change in _changes(outputs)]
    assert sale_driven == [
        ("pos-0042-20260105-000731", "fuel:diesel", ENTERED),
        ("third-fill", "heavy_user", ENTERED),
        ("third-fill", "morning_buyer", ENTERED),
    ]
    for outputs in lapse.scenario:
        for change in outputs["segments"]:
            assert change["occurred_at"] == outputs["reward"]["occurred_at"]
    # Time-driven changes come from the daily job, as of the start of its day: 14 days
    # without a sale on 21 January; the 6 January sale leaves the 30-day window on
    # 5 February (1 morning sale of 2); 30 days without a sale on 6 February.
    time_driven = [change for _, outputs in lapse.jobs for change in _changes(outputs)]
    assert time_driven == [
        ("daily:2026-01-21", "at_risk_14d", ENTERED),
        ("daily:2026-02-05", "morning_buyer", LEFT),
        ("daily:2026-02-06", "at_risk_14d", LEFT),
        ("daily:2026-02-06", "heavy_user", LEFT),
        ("daily:2026-02-06", "lapsed_30d", ENTERED),
    ]
    for day, outputs in lapse.jobs:
        start = datetime.combine(day, time(0), ZONE).astimezone(UTC)
        for change in outputs["segments"]:
            assert change["occurred_at"] == start.isoformat(timespec="milliseconds")
            assert change["source_event_id"] == outputs["reward"]["source_event_id"]
    # The comeback sale leaves lapsed_30d at once.
    assert _changes(lapse.comeback) == [(COMEBACK_ID, "lapsed_30d", LEFT)]
    assert lapse.state.segments == ("fuel:diesel",)

    # Every change has its own id; the schema lists the program's segments and changes.
    events = [change for outputs in lapse.everything() for change in outputs["segments"]]
    assert len({change["segment_event_id"] for change in events}) == len(events)
    segment = load_schema("segment_event")["properties"]["segment"]
    assert set(segment["examples"]) == {entry.name for entry in PROGRAM.segments}
    for entry in PROGRAM.segments:
        assert f"`{entry.name}`" in segment["description"]
    assert not validator("segment_event").is_valid({**events[0], "occurred_at": "2026-01-05"})


def test_segment_events_of_a_rerun_daily_job_have_the_same_ids():
    state, _ = _run_scenario()
    state, jobs = _daily_jobs(state, LAST_SALE + timedelta(days=1), LAPSED_ON)
    again, outcome = apply_daily(state, LAPSED_ON, PROGRAM, 1_770_400_000_000, MEMBER)
    assert outcome is not None and outcome.duplicate and again == state
    rerun = _validated(render_daily(MEMBER, LAPSED_ON, outcome.applied, again, PROGRAM))
    assert rerun["segments"] == jobs[-1][1]["segments"]


def test_win_back_notification_and_daily_reward_validate_against_their_schemas():
    lapse = _lapse_and_come_back()
    day, lapsed = lapse.jobs[-1]
    assert day == LAPSED_ON
    reward = lapsed["reward"]
    assert reward["source_type"] == DAILY_SOURCE
    assert reward["source_event_id"] == f"daily:{LAPSED_ON.isoformat()}"
    assert reward["station_id"] is reward["breakdown"] is reward["reversal"] is None
    assert reward["points"] == 0 and lapsed["ledger"] == []
    issued = reward["coupon_issued"]
    # [win_back]: +200 points on a fill within 14 days of the job's day.
    assert issued["benefit"] == "bonus_points" and issued["value"] == 200
    assert issued["expires_at"] == "2026-02-19T23:00:00.000+00:00"
    assert issued["code"] == codes.coupon_code(MEMBER, reward["source_event_id"])
    # Only the job that entered lapsed_30d issued a coupon or sent a notification.
    assert [d for d, outputs in lapse.jobs if outputs["reward"]["coupon_issued"]] == [LAPSED_ON]
    assert [d for d, outputs in lapse.jobs if outputs["notifications"]] == [LAPSED_ON]

    [notification] = lapsed["notifications"]
    assert notification["kind"] == WIN_BACK and WIN_BACK in PROGRAM.marketing_kinds
    assert notification["data"] == {
        "code": issued["code"],
        "benefit": "bonus_points",
        "value": 200,
        "expires_on": "2026-02-20",
        "balance": reward["balance_after"],
    }
    template = PROGRAM.templates[WIN_BACK]["es"]
    assert notification["title"] == template.title.format_map(notification["data"])
    assert notification["body"] == template.body.format_map(notification["data"])
    data_keys = set(load_schema("notification")["properties"]["data"]["properties"])
    assert set(notification["data"]) <= data_keys
    notification_schema = validator("notification")
    for key in notification["data"]:
        data = {k: v for k, v in notification["data"].items() if k != key}
        assert not notification_schema.is_valid({**notification, "data": data}), key

    # The comeback sale redeems the coupon the job issued.
    assert lapse.comeback["reward"]["coupons"] == [
        {"code": issued["code"], "status": "redeemed", "benefit": "bonus_points", "value": 200}
    ]
    assert {"reason": COUPON_BONUS, "points": 200} in (
        lapse.comeback["reward"]["breakdown"]["bonuses"]
    )


# --- 3c. Birthdays, expiry and referrals: a referrer's first year --------------------------

REFERRER_MEMBER = "M-100871"
"""Signs up on 10 January 2025 (born 12 January, Spanish, marketing consent) and fills 425 L
an hour later: 850 fuel points + 100 welcome = 950, bronze; never fills again."""
REFEREE_MEMBER = "M-100990"
"""Signs up on 11 January 2025 with the referrer's code."""
STRANGER_MEMBER = "M-100991"
"""Signs up on 11 January 2025 with a code nobody owns."""
REFERRAL_SIGNUP_ID = "app-20250111-000042"
FIRST_DAY = date(2025, 1, 11)
"""The referrer's first daily job (00:05, before the referral)."""
LAST_DAY = date(2026, 1, 10)
"""365 days after the fill: its 950 points expire."""


def _signup(
    member_id: str, event_id: str, occurred_at: str, processed_ms: int, **fields: Any
) -> tuple[MemberState, Outputs]:
    payload = member_event(
        event_id=event_id, member_id=member_id, occurred_at=occurred_at, **fields
    )
    event = decode_member_event(orjson.dumps(payload), MAX_BYTES)
    state, outcome = apply_member_event(MemberState(), event, PROGRAM, processed_ms)
    return state, render_member_event(event, outcome.applied, state, PROGRAM)


def _settle(
    state: MemberState,
    claim: dict[str, Any],
    owner: str | None,
    side: tuple[str, str],
    processed_ms: int,
) -> tuple[MemberState, dict[str, Any]]:
    """One side (member id, role) of a claimed referral code: the referral agent's verdict
    (``claim_status``) applied on that member's partition; its validated outputs."""
    member_id, role = side
    outcome = ReferralOutcome(
        member_id=member_id,
        role=role,
        signup_event_id=claim["signup_event_id"],
        code=claim["code"],
        status=claim_status(None if owner is None else owner.encode(), claim["member_id"].encode()),
        occurred_at=datetime.fromisoformat(claim["occurred_at"]),
    )
    state, applied = apply_referral_outcome(state, outcome, PROGRAM, processed_ms)
    return state, _validated(render_referral(outcome, applied.applied, state, PROGRAM))


def _claim(outputs: Outputs) -> dict[str, Any]:
    [claim] = [op for op in outputs.referral_ops if op["op"] == "claim"]
    return claim


@dataclass(frozen=True)
class FirstYear:
    """Validated outputs: the referrer's and the referee's signups, the three referral
    outcomes (both sides of the accepted code, the stranger's refused one) and the
    referrer's daily jobs from FIRST_DAY to LAST_DAY that did something."""

    referrer_signup: dict[str, Any]
    referee_signup: dict[str, Any]
    referrer: dict[str, Any]
    referee: dict[str, Any]
    refused: dict[str, Any]
    jobs: list[tuple[date, dict[str, Any]]]

    def referrals(self) -> list[dict[str, Any]]:
        return [self.referrer, self.referee, self.refused]

    def everything(self) -> list[dict[str, Any]]:
        return [*self.referrals(), *(outputs for _, outputs in self.jobs)]


def _first_year() -> FirstYear:
    referrer, signed_up = _signup(
        REFERRER_MEMBER,
        "crm-20250110-000088",
        "2025-01-10T08:00:00+01:00",
        1_736_492_400_311,
        birth_date="1990-01-12",
        locale="es",
        consents={"marketing": True},
    )
    payload = sale(
        transaction_id="pos-0017-20250110-000412",
        member_id=REFERRER_MEMBER,
        station_id="ST-0017",
        occurred_at="2025-01-10T09:00:00+01:00",
        liters=425,
        amount=680,
    )
    fill = decode_transaction(orjson.dumps(payload), MAX_BYTES)
    referrer, _ = apply_transaction(referrer, fill, PROGRAM, 1_736_496_000_204)
    assert (referrer.balance, referrer.tier) == (950, "bronze")
    referrer, first_jobs = _daily_jobs(referrer, FIRST_DAY, FIRST_DAY, REFERRER_MEMBER)
    code = referrer.referral_code
    assert code is not None
    referee, referee_signup = _signup(
        REFEREE_MEMBER,
        REFERRAL_SIGNUP_ID,
        "2025-01-11T19:45:10+01:00",
        1_736_621_110_932,
        referral_code=f"{code[:4]}-{code[4:]}".lower(),
    )
    claim = _claim(referee_signup)
    referee, for_referee = _settle(
        referee, claim, REFERRER_MEMBER, (REFEREE_MEMBER, REFEREE), 1_736_621_111_488
    )
    referrer, for_referrer = _settle(
        referrer, claim, REFERRER_MEMBER, (REFERRER_MEMBER, REFERRER), 1_736_621_111_520
    )
    stranger, stranger_signup = _signup(
        STRANGER_MEMBER,
        "app-20250111-000057",
        "2025-01-11T21:02:44Z",
        1_736_629_364_210,
        referral_code="ZZZZ9999",
    )
    _, refused = _settle(
        stranger, _claim(stranger_signup), None, (STRANGER_MEMBER, REFEREE), 1_736_629_364_771
    )
    next_day = FIRST_DAY + timedelta(days=1)
    referrer, jobs = _daily_jobs(referrer, next_day, LAST_DAY, REFERRER_MEMBER)
    return FirstYear(
        _validated(signed_up),
        _validated(referee_signup),
        for_referrer,
        for_referee,
        refused,
        [*first_jobs, *jobs],
    )


def _ledger(outputs: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(e["reason"], e["delta"], e["balance_after"]) for e in outputs["ledger"]]


def _messages(outputs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n["kind"], n["data"]) for n in outputs["notifications"]]


def test_referral_outcomes_validate_against_their_schemas():
    year = _first_year()
    code = year.referrer["reward"]["referral"]["code"]
    # The referrer's 100 points make 1,050 earned in the window: silver at once.
    assert _ledger(year.referrer) == [(REFERRAL_BONUS, 100, 1050)]
    assert _messages(year.referrer) == [
        (REFERRAL_BONUS_KIND, {"points": 100, "balance": 1050, "code": code}),
        (TIER_CHANGED, {"balance": 1050, "tier": "silver", "previous_tier": "bronze"}),
    ]
    assert _ledger(year.referee) == [(REFERRAL_BONUS, 50, 50)]
    assert _messages(year.referee) == [
        (REFERRAL_BONUS_KIND, {"points": 50, "balance": 50, "code": code})
    ]
    assert _ledger(year.refused) == [] and _messages(year.refused) == []
    expected = [
        (REFERRER, ACCEPTED, 100, "silver", {"from": "bronze", "to": "silver"}),
        (REFEREE, ACCEPTED, 50, "bronze", None),
        (REFEREE, UNKNOWN_REFERRAL_CODE, 0, "bronze", None),
    ]
    for outputs, (role, status, points, tier, tier_change) in zip(
        year.referrals(), expected, strict=True
    ):
        reward = outputs["reward"]
        assert reward["source_type"] == REFERRAL_SOURCE
        assert reward["referral"]["role"] == role and reward["referral"]["status"] == status
        assert reward["points"] == points and not reward["enrolled"]
        # A referral's tier is the one held after it.
        assert reward["tier"] == tier and reward["tier_change"] == tier_change
        assert reward["station_id"] is reward["breakdown"] is reward["reversal"] is None
        for n in outputs["notifications"]:
            assert n["occurred_at"] == reward["occurred_at"]
    assert year.refused["reward"]["referral"]["code"] == "ZZZZ9999"
    # Both sides carry the signup's id and time; the referee's signup reward event shares
    # the source_event_id but not the reward_id.
    signup = year.referee_signup["reward"]
    for outputs in (year.referrer, year.referee):
        reward = outputs["reward"]
        assert reward["source_event_id"] == signup["source_event_id"] == REFERRAL_SIGNUP_ID
        assert reward["occurred_at"] == signup["occurred_at"] == "2025-01-11T19:45:10+01:00"
        assert reward["reward_id"] != signup["reward_id"]
        assert code == year.referrer_signup["notifications"][0]["data"]["referral_code"]


def test_birthday_expiry_and_downgrade_of_the_daily_job_validate_against_their_schemas():
    jobs = dict(_first_year().jobs)
    birthday = date(2025, 1, 12)
    assert _ledger(jobs[birthday]) == [(BIRTHDAY_BONUS, 200, 1250)]
    assert _messages(jobs[birthday]) == [(BIRTHDAY, {"balance": 1250, "points": 200})]
    # A notice 7 days before each day's points expire: the fill's 950, the referral's 100,
    # the birthday's 200.
    notices = {
        day: _messages(outputs)
        for day, outputs in jobs.items()
        if POINTS_EXPIRING in _kinds(outputs)
    }
    assert notices == {
        date(2026, 1, 3): [
            (POINTS_EXPIRING, {"balance": 1250, "points": 950, "expires_on": "2026-01-10"})
        ],
        date(2026, 1, 4): [
            (POINTS_EXPIRING, {"balance": 1250, "points": 100, "expires_on": "2026-01-11"})
        ],
        date(2026, 1, 5): [
            (POINTS_EXPIRING, {"balance": 1250, "points": 200, "expires_on": "2026-01-12"})
        ],
    }
    # On the announced day the fill's points expire; the 300 points earned in the window
    # since 11 January 2025 are below silver's 1,000: a downgrade.
    expired = jobs[LAST_DAY]
    assert _ledger(expired) == [(EXPIRY, -950, 300)]
    assert _messages(expired) == [
        (POINTS_EXPIRED, {"balance": 300, "points": 950}),
        (TIER_CHANGED, {"balance": 300, "tier": "bronze", "previous_tier": "silver"}),
    ]
    expected = {
        birthday: (200, "silver", None),
        date(2026, 1, 3): (0, "silver", None),
        LAST_DAY: (-950, "bronze", {"from": "silver", "to": "bronze"}),
    }
    for day, (points, tier, tier_change) in expected.items():
        reward = jobs[day]["reward"]
        assert reward["source_type"] == DAILY_SOURCE
        assert reward["source_event_id"] == f"daily:{day.isoformat()}"
        start = datetime.combine(day, time(0), ZONE).astimezone(UTC)
        assert reward["occurred_at"] == start.isoformat(timespec="milliseconds")
        assert reward["points"] == points and not reward["enrolled"]
        # A daily job's tier is the one held after it.
        assert reward["tier"] == tier and reward["tier_change"] == tier_change
        assert reward["station_id"] is reward["breakdown"] is reward["reversal"] is None
        assert reward["referral"] is None
        for entry in jobs[day]["ledger"]:
            assert entry["occurred_at"] == reward["occurred_at"]
            assert entry["source_event_id"] == reward["source_event_id"]


def test_notifications_and_rewards_of_daily_jobs_and_referrals_follow_the_if_then_rules():
    year = _first_year()
    notifications = [n for outputs in year.everything() for n in outputs["notifications"]]
    kinds = {n["kind"] for n in notifications}
    assert kinds == {
        BIRTHDAY,
        POINTS_EXPIRING,
        POINTS_EXPIRED,
        REFERRAL_BONUS_KIND,
        TIER_CHANGED,
        WIN_BACK,
    }
    data_keys = set(load_schema("notification")["properties"]["data"]["properties"])
    notification_schema = validator("notification")
    for notification in notifications:
        data = notification["data"]
        template = PROGRAM.templates[notification["kind"]][notification["locale"]]
        assert notification["title"] == template.title.format_map(data)
        assert notification["body"] == template.body.format_map(data)
        assert set(data) <= data_keys
        # Every key these kinds carry is required for the kind.
        for key in data:
            without = {k: v for k, v in data.items() if k != key}
            assert not notification_schema.is_valid({**notification, "data": without}), key
        if "points" in data and notification["kind"] != TIER_CHANGED:
            nothing = {**notification, "data": {**data, "points": 0}}
            assert not notification_schema.is_valid(nothing), notification["kind"]

    # Neither happened at a station nor refunded anything; only a referral has a referral.
    reward_schema = validator("reward_event")
    reversal = {"original_transaction_id": "t-1", "requested_liters": 1, "refunded_liters": 1}
    for outputs in year.everything():
        reward = outputs["reward"]
        assert not reward_schema.is_valid({**reward, "station_id": "ST-0042"})
        assert not reward_schema.is_valid({**reward, "reversal": reversal})
        other = year.refused["reward"]["referral"] if reward["referral"] is None else None
        assert not reward_schema.is_valid({**reward, "referral": other})


# --- 3d. Redemptions: the scenario's member spends points on catalog rewards -------------

CATALOG = Catalog(
    {
        "car-wash": Reward(
            cost_points=450,
            stock=1,  # the last unit
            name={"en": "Car wash", "es": "Lavado de coche", "it": "Autolavaggio"},
        ),
        "coffee": Reward(cost_points=80, stock=500, name={"en": "Coffee", "es": "Café"}),
        "screen-wash-5l": Reward(
            cost_points=300,
            stock=120,
            per_member_limit=2,
            name={"en": "Screen wash 5 L", "es": "Líquido limpiaparabrisas 5 L"},
        ),
        "sunshade-summer-2025": Reward(
            cost_points=250,
            stock=200,
            active=False,
            name={"en": "Car sunshade (summer 2025)"},
        ),
    }
)
"""Stands in for the catalog view of the workers (``loyalty.core.saga.Catalog``)."""

REDEMPTION_MESSAGES: list[dict[str, Any]] = [
    # the scenario leaves the member 1,000 points: the last car wash, 450
    redemption(),
    # the car wash again: the points are there, the stock is not
    redemption(request_id="rdm-0042-20260109-000018", occurred_at="2026-01-09T17:21:40+01:00"),
    # three bottles of a reward limited to two per member
    redemption(
        request_id="app-20260109-000402",
        reward_id="screen-wash-5l",
        quantity=3,
        occurred_at="2026-01-09T20:14:09+01:00",
    ),
    # last summer's reward, retired
    redemption(
        request_id="app-20260109-000403",
        reward_id="sunshade-summer-2025",
        occurred_at="2026-01-09T20:15:30+01:00",
    ),
    # a reward the catalog does not have
    redemption(
        request_id="app-20260109-000404",
        reward_id="gift-card-50",
        occurred_at="2026-01-09T20:16:02+01:00",
    ),
    # ten coffees cost 800 of the 550 points left
    redemption(
        request_id="app-20260110-000310",
        reward_id="coffee",
        quantity=10,
        station_id="ST-0017",
        occurred_at="2026-01-10T07:44:12Z",
    ),
    # two coffees, handed over at once
    redemption(
        type="request",
        request_id="app-20260110-000311",
        reward_id="coffee",
        quantity=2,
        station_id="ST-0017",
        occurred_at="2026-01-10T07:45:00Z",
    ),
    station_report(
        FULFILLED,
        request_id="app-20260110-000311",
        station_id="ST-0017",
        occurred_at="2026-01-10T07:52:40Z",
    ),
    # the car wash is cancelled: its points and its unit come back
    station_report(CANCELLED),
]

REDEMPTION_OUTCOMES = [
    # (request_id, status, reason, ledger entries (reason, delta, balance_after))
    ("rdm-0042-20260109-000017", saga.CONFIRMED, None, [(REDEMPTION, -450, 550)]),
    ("rdm-0042-20260109-000018", saga.REJECTED, saga.OUT_OF_STOCK, []),
    ("app-20260109-000402", saga.REJECTED, saga.LIMIT_REACHED, []),
    ("app-20260109-000403", saga.REJECTED, saga.INACTIVE_REWARD, []),
    ("app-20260109-000404", saga.REJECTED, saga.UNKNOWN_REWARD, []),
    ("app-20260110-000310", saga.REJECTED, saga.INSUFFICIENT_POINTS, []),
    ("app-20260110-000311", saga.CONFIRMED, None, [(REDEMPTION, -160, 390)]),
    ("app-20260110-000311", FULFILLED, None, []),
    ("rdm-0042-20260109-000017", CANCELLED, None, [(REDEMPTION_REFUND, 450, 840)]),
]
"""Every reward event the member's partition emits for REDEMPTION_MESSAGES, in order."""
CAUSES = {(p["request_id"], p.get("type", "request")): p for p in REDEMPTION_MESSAGES}
"""Each message of REDEMPTION_MESSAGES by (request_id, type)."""

REDEMPTION_NOTICES = {
    saga.CONFIRMED: REDEMPTION_CONFIRMED,
    saga.REJECTED: REDEMPTION_REJECTED,
    CANCELLED: REDEMPTION_CANCELLED,
}
"""The notification of each status (a fulfilment has none)."""


@dataclass
class RenderingBus(Bus):
    """The in-memory saga of tests/unit/test_redemptions.py, rendering and validating every
    output of the member's partition with the default program at a given clock."""

    now_ms: int = 0
    rendered: list[dict[str, Any]] = field(default_factory=list)

    def member(self, member_id: str, value: dict[str, Any]) -> None:
        step = decode_member_command(orjson.dumps(value))
        assert isinstance(step, RedemptionStep)
        state, outcome = apply_redemption_step(self.members[member_id], step, PROGRAM, self.now_ms)
        outputs = render_redemption(step, outcome.applied, state, PROGRAM)
        if outputs.reward is None:  # points set aside: only a reply to the coordinator
            assert outputs.ledger == outputs.notifications == outputs.segments == []
        else:
            self.rendered.append(_validated(outputs))
        self.members[member_id] = state
        self.now_ms += 37
        self.forward(outputs.saga)


def _redemptions() -> RenderingBus:
    """The scenario's member, REDEMPTION_MESSAGES one after the other, each processed from
    180 ms after its event time."""
    state, _ = _run_scenario()
    assert state.balance == 1000
    bus = RenderingBus(CATALOG, random.Random(6))
    bus.members[MEMBER] = state
    for payload in REDEMPTION_MESSAGES:
        message = decode_redemption(orjson.dumps(payload), MAX_BYTES)
        bus.now_ms = int(message.occurred_at.timestamp() * 1000) + 180
        bus.station(message)
        bus.run()
    assert bus.dead_letters == []
    return bus


def test_redemption_outputs_validate_against_their_schemas():
    bus = _redemptions()
    outcomes = [
        (
            outputs["reward"]["source_event_id"],
            outputs["reward"]["redemption"]["status"],
            outputs["reward"]["redemption"]["reason"],
            _ledger(outputs),
        )
        for outputs in bus.rendered
    ]
    assert outcomes == REDEMPTION_OUTCOMES
    assert {reason for _, _, reason, _ in outcomes} - {None} == KNOWN_REJECTION_REASONS
    assert bus.members[MEMBER].balance == 840 and bus.stock["car-wash"].reserved == 0

    data_keys = set(load_schema("notification")["properties"]["data"]["properties"])
    for outputs in bus.rendered:
        reward = outputs["reward"]
        shown = reward["redemption"]
        request = CAUSES[shown["request_id"], "request"]
        assert reward["source_type"] == REDEMPTION_SOURCE
        assert reward["member_id"] == MEMBER and not reward["enrolled"]
        # The request's station, at every step; the event time of the step's cause.
        assert reward["station_id"] == request["station_id"]
        decided = shown["status"] in (saga.CONFIRMED, saga.REJECTED)
        cause = request if decided else CAUSES[shown["request_id"], shown["status"]]
        occurred_at = datetime.fromisoformat(cause["occurred_at"]).isoformat()
        assert reward["occurred_at"] == occurred_at
        assert (shown["reward_id"], shown["quantity"]) == (
            request["reward_id"],
            request["quantity"],
        )
        catalog_entry = CATALOG.get(shown["reward_id"])
        cost = 0 if catalog_entry is None else catalog_entry.cost_points * shown["quantity"]
        assert shown["points"] == cost
        assert reward["points"] == sum(entry["delta"] for entry in outputs["ledger"])
        for key in ("breakdown", "reversal", "tier", "tier_change", "coupons", "missions"):
            assert reward[key] is None, key
        assert reward["coupon_issued"] is reward["referral"] is None
        for entry in outputs["ledger"]:
            assert entry["source_event_id"] == shown["request_id"]
            assert entry["occurred_at"] == reward["occurred_at"]

        # One notification per outcome but a fulfilment, in Spanish: the reward's Spanish
        # name, else its English one (the retired sunshade), else its id (an unknown reward).
        kind = REDEMPTION_NOTICES.get(shown["status"])
        assert _kinds(outputs) == ([] if kind is None else [kind])
        for notification in outputs["notifications"]:
            data = notification["data"]
            names = {} if catalog_entry is None else catalog_entry.name
            reason = shown["reason"]
            assert data == {
                **shown,
                "reward": names.get("es") or names.get("en") or shown["reward_id"],
                "reason_text": None if reason is None else PROGRAM.reason_texts["es"][reason],
                "balance": reward["balance_after"],
            }
            assert set(data) <= data_keys
            assert notification["locale"] == "es"
            assert notification["occurred_at"] == reward["occurred_at"]
            template = PROGRAM.templates[notification["kind"]]["es"]
            assert notification["title"] == template.title.format_map(data)
            assert notification["body"] == template.body.format_map(data)


def test_redemption_outputs_follow_the_if_then_rules():
    bus = _redemptions()
    reward_schema = validator("reward_event")
    notification_schema = validator("notification")
    by_status = {o["reward"]["redemption"]["status"]: o for o in reversed(bus.rendered)}
    rejected, confirmed = by_status[saga.REJECTED], by_status[saga.CONFIRMED]
    for outputs in bus.rendered:
        reward = outputs["reward"]
        shown = reward["redemption"]
        # A redemption happens at a station, has an outcome and no sale's breakdown.
        assert not reward_schema.is_valid({**reward, "station_id": None})
        assert not reward_schema.is_valid({**reward, "redemption": None})
        breakdown = {
            "liters": 1,
            "points_per_liter": 1,
            "base_points": 1,
            "multipliers": [],
            "fuel_points": 1,
            "bonuses": [],
        }
        assert not reward_schema.is_valid({**reward, "breakdown": breakdown})
        # Only a rejected one has a reason, and it always has one.
        if shown["status"] == saga.REJECTED:
            wrong = {**shown, "reason": None}
        else:
            wrong = {**shown, "reason": saga.OUT_OF_STOCK}
        assert not reward_schema.is_valid({**reward, "redemption": wrong})
        for notification in outputs["notifications"]:
            data = notification["data"]
            # Every key of these kinds is required for the kind.
            for key in data:
                without = {k: v for k, v in data.items() if k != key}
                assert not notification_schema.is_valid({**notification, "data": without}), key
            assert not notification_schema.is_valid({**notification, "data": {**data, **wrong}})
            if notification["kind"] != REDEMPTION_REJECTED:  # an unknown reward costs 0
                nothing = {**notification, "data": {**data, "points": 0}}
                assert not notification_schema.is_valid(nothing)
    # A future status (and its reason) stays valid; a new reason of a rejection too.
    future = {**rejected["reward"]["redemption"], "status": "expired", "reason": "too_late"}
    assert reward_schema.is_valid({**rejected["reward"], "redemption": future})
    for notification in rejected["notifications"]:
        data = {**notification["data"], "reason": "some_future_reason"}
        assert notification_schema.is_valid({**notification, "data": data})
    # Rewards of every other source type have no redemption.
    year = _first_year()
    _, scenario = _run_scenario()
    for outputs in [*scenario, *year.everything()]:
        assert not reward_schema.is_valid(
            {**outputs["reward"], "redemption": confirmed["reward"]["redemption"]}
        )


def test_station_messages_that_cannot_apply_are_dead_lettered_with_documented_reasons():
    bus = _redemptions()
    cases = [
        # never requested
        (station_report(CANCELLED, request_id="rdm-0042-20260109-000099"), saga.UNKNOWN_REQUEST),
        # rejected (out of stock): nothing to hand over
        (
            station_report(FULFILLED, request_id="rdm-0042-20260109-000018"),
            saga.NOT_CONFIRMED,
        ),
        # the confirmed request's id reused for another reward
        (
            redemption(request_id="app-20260110-000311", reward_id="car-wash"),
            saga.REQUEST_ID_CONFLICT,
        ),
    ]
    for index, (payload, reason) in enumerate(cases):
        value = orjson.dumps(payload)
        message = decode_redemption(value, MAX_BYTES)
        request = bus.requests.get(message.request_id)
        with pytest.raises(saga.RejectedStationMessage) as raised:
            if message.type == "request":
                saga.coordinate_request(request, message, CATALOG)
            else:
                saga.coordinate_station(request, message, CATALOG)
        assert raised.value.reason == reason
        stand_in = StandInMessage(
            "loyalty.redemptions", message.request_id.encode(), value, 1_768_132_997.0 + index
        )
        record = dead_letter(stand_in, reason, raised.value.message, 1_768_132_997_412 + index)
        emitted = _assert_matches("dead_letter", record)
        assert emitted["reason"] == reason
        assert _b64decode(emitted["value_b64"]) == value


def test_the_examples_of_segments_daily_jobs_referrals_and_redemptions_are_engine_records():
    """The schemas' examples of segment events, of daily jobs', referrals' and redemptions'
    reward events, and of the ledger reasons and notification kinds only those produce, are
    outputs of the scenarios above, byte for byte; the redemption schema's examples are
    messages of the redemption scenario."""
    everything = [
        *_lapse_and_come_back().everything(),
        *_first_year().everything(),
        *_redemptions().rendered,
    ]
    rendered = {
        "segment_event": [change for outputs in everything for change in outputs["segments"]],
        "ledger_entry": [entry for outputs in everything for entry in outputs["ledger"]],
        "notification": [n for outputs in everything for n in outputs["notifications"]],
        "reward_event": [outputs["reward"] for outputs in everything],
    }
    examples = {
        "segment_event": load_schema("segment_event")["examples"],
        "ledger_entry": [
            entry
            for entry in load_schema("ledger_entry")["examples"]
            if entry["reason"] not in SCENARIO_LEDGER_REASONS
        ],
        "notification": [
            n
            for n in load_schema("notification")["examples"]
            if n["kind"] not in SCENARIO_NOTIFICATION_KINDS
        ],
        "reward_event": [
            reward
            for reward in load_schema("reward_event")["examples"]
            if reward["source_type"] in (DAILY_SOURCE, REFERRAL_SOURCE, REDEMPTION_SOURCE)
        ],
    }
    for name, records in examples.items():
        assert records, name
        for example in records:
            assert example in rendered[name], (name, example)
    # Each reason, kind and source type that only these produce has an example.
    assert {entry["reason"] for entry in examples["ledger_entry"]} == (
        KNOWN_LEDGER_REASONS - SCENARIO_LEDGER_REASONS
    )
    assert {n["kind"] for n in examples["notification"]} == (
        KNOWN_NOTIFICATION_KINDS - SCENARIO_NOTIFICATION_KINDS
    )
    assert {reward["source_type"] for reward in examples["reward_event"]} == {
        DAILY_SOURCE,
        REFERRAL_SOURCE,
        REDEMPTION_SOURCE,
    }
    shown = [r["redemption"] for r in examples["reward_event"] if r["redemption"] is not None]
    assert {(r["status"], r["reason"] is None) for r in shown} == {
        (saga.CONFIRMED, True),
        (saga.REJECTED, False),
        (CANCELLED, True),
    }
    for example in load_schema("redemption")["examples"]:
        assert example in REDEMPTION_MESSAGES, example
    changes = {example["change"] for example in examples["segment_event"]}
    sources = {example["source_event_id"][:6] for example in examples["segment_event"]}
    assert changes == {ENTERED, LEFT} and "daily:" in sources and len(sources) > 1


class StandInMessage:
    """The attributes of a Faust ``Message`` that dead_letter reads."""

    def __init__(
        self, topic: str, key: bytes | None, value: bytes | None, timestamp: float | None
    ) -> None:
        self.topic = topic
        self.partition = 3
        self.offset = 1187
        self.timestamp = timestamp
        self.key = key
        self.value = value


DECODERS = {
    "loyalty.transactions": decode_transaction,
    "loyalty.members": decode_member_event,
    "loyalty.redemptions": decode_redemption,
}


@pytest.mark.parametrize(
    ("topic", "key", "value", "timestamp"),
    [
        ("loyalty.transactions", b"M-100234", orjson.dumps(sale(liters="20")), 1_767_600_451.907),
        ("loyalty.transactions", b"M-100234", b"\xff\xfe not UTF-8", 1_767_600_451.0),
        ("loyalty.transactions", None, None, None),
        ("loyalty.members", b"M-100234", orjson.dumps(member_event(type="birthday")), 1.5e9),
        (
            "loyalty.redemptions",
            b"rdm-0042-20260109-000017",
            orjson.dumps(redemption(quantity=0)),
            1_767_975_605.3,
        ),
    ],
    ids=[
        "json value",
        "binary value",
        "no key, tombstone, no timestamp",
        "member event",
        "redemption",
    ],
)
def test_dead_letter_validates_and_keeps_the_original_bytes(topic, key, value, timestamp):
    with pytest.raises(InvalidEvent) as raised:
        DECODERS[topic](value, MAX_BYTES)
    error = raised.value
    record = dead_letter(
        StandInMessage(topic, key, value, timestamp), error.reason, error.message, 1_767_600_452_131
    )
    emitted = _assert_matches("dead_letter", record)
    assert emitted["reason"] == error.reason
    assert (
        emitted["source_topic"]
        in load_schema("dead_letter")["properties"]["source_topic"]["examples"]
    )
    assert _b64decode(emitted["key_b64"]) == key
    assert _b64decode(emitted["value_b64"]) == value
    assert emitted["timestamp_ms"] == (None if timestamp is None else int(timestamp * 1000))


def _b64decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def _reasons_raised(module: Any, exception: str) -> set[str]:
    """The reason constants passed to ``exception(...)`` anywhere in ``module``."""
    reasons = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == exception
            and node.args
        ):
            argument = node.args[0]
            if isinstance(argument, ast.Name):
                reasons.add(getattr(module, argument.id))
            elif isinstance(argument, ast.Constant):
                reasons.add(argument.value)
    return reasons


def test_every_dead_letter_reason_the_engine_produces_is_documented():
    decoder_reasons = _reasons_raised(decode, "InvalidEvent")
    account_reasons = _reasons_raised(loyalty.core.accounts, "RejectedTransaction")
    saga_reasons = _reasons_raised(loyalty.core.saga, "RejectedStationMessage")
    placement_reasons = _reasons_raised(loyalty.streams.partitioning, "InvalidEvent")
    storage_reasons = _reasons_raised(loyalty.agents.batching, "Unstorable")
    # the scan found them
    assert (len(decoder_reasons), len(account_reasons), len(saga_reasons)) == (12, 6, 3)
    assert placement_reasons == {WRONG_PARTITION}
    assert storage_reasons == {STATE_TOO_LARGE, OUTPUT_TOO_LARGE}
    reasons = (
        decoder_reasons
        | account_reasons
        | saga_reasons
        | placement_reasons
        | storage_reasons
        | {PROCESSING_ERROR}
    )
    field = load_schema("dead_letter")["properties"]["reason"]
    assert set(field["examples"]) == reasons
    for reason in reasons:
        assert f"`{reason}`" in field["description"]
    assert "enum" not in field


def _str_constants(module: Any) -> dict[str, str]:
    """The upper-case names of ``module`` bound to strings (its own and those it imports)."""
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str)
    }


def _assignments(scope: ast.AST, walk: bool = True) -> dict[str, ast.expr]:
    """Name -> assigned value, for the plain and annotated assignments in ``scope`` (only its
    top-level statements when not ``walk``)."""
    nodes = ast.walk(scope) if walk else iter(getattr(scope, "body", []))
    assigned: dict[str, ast.expr] = {}
    for node in nodes:
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                assigned[target.id] = value
    return assigned


def _constants_named_in(
    node: ast.AST, constants: dict[str, str], bound: dict[str, ast.expr]
) -> set[str]:
    """The ``constants`` named in ``node``, or in the values of the names it uses that are
    ``bound`` (a local, or a module-level table such as ``{status: KIND}``)."""
    found: set[str] = set()
    for name in ast.walk(node):
        if not isinstance(name, ast.Name):
            continue
        if name.id in constants:
            found.add(constants[name.id])
        elif name.id in bound:
            rest = {key: value for key, value in bound.items() if key != name.id}
            found |= _constants_named_in(bound[name.id], constants, rest)
    return found


def _pair_heads(module: Any, constants: dict[str, str]) -> set[str]:
    """The ``constants`` that lead a ``(constant, value)`` pair anywhere in ``module``, directly
    or through a local or module-level name assigned from them (``kind = A if ... else B``,
    ``kind = NOTICES.get(status)``): the ``(reason, points)`` ledger entries of
    core/accounts.py, the ``(kind, data)`` messages of core/render.py."""
    tree = ast.parse(inspect.getsource(module))
    module_level = _assignments(tree, walk=False)
    found: set[str] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        bound = {**module_level, **_assignments(function)}
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Tuple)
                and isinstance(node.ctx, ast.Load)
                and len(node.elts) == 2
                and isinstance(node.elts[0], ast.Name)
            ):
                found |= _constants_named_in(node.elts[0], constants, bound)
    return found


def _reward_source_types() -> set[str]:
    """The ``source_type`` of every reward event core/render.py builds: a constant of
    the module, or the ``type`` of the input transaction or member event."""
    constants = _str_constants(loyalty.core.render)
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(loyalty.core.render))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id == "_reward":
            argument = node.args[3]
        elif node.func.id == "RewardEvent":
            argument = next(k.value for k in node.keywords if k.arg == "source_type")
        else:
            continue
        if isinstance(argument, ast.Attribute) and argument.attr == "type":
            found |= {*TRANSACTION_TYPES, *MEMBER_EVENT_TYPES}
        elif isinstance(argument, ast.Name) and argument.id in constants:
            found.add(constants[argument.id])
        else:  # only _reward passes its own argument on
            assert ast.unparse(argument) == "source_type", ast.unparse(argument)
    return found


def test_every_reason_kind_and_source_type_the_engine_emits_is_known():
    """Read from the code, so a new one fails here until it joins its KNOWN set, and then
    the test below until the schema lists it; every one is also rendered above."""
    ledger_reasons = _pair_heads(loyalty.core.accounts, _str_constants(loyalty.schemas.outputs))
    assert ledger_reasons == KNOWN_LEDGER_REASONS
    kinds = _pair_heads(loyalty.core.render, _str_constants(loyalty.core.render))
    assert kinds == KNOWN_NOTIFICATION_KINDS
    assert _reward_source_types() == KNOWN_SOURCE_TYPES

    _, scenario = _run_scenario()
    everything = [
        *scenario,
        *_lapse_and_come_back().everything(),
        *_first_year().everything(),
        *_redemptions().rendered,
    ]
    rendered_reasons = {entry["reason"] for outputs in everything for entry in outputs["ledger"]}
    assert rendered_reasons == KNOWN_LEDGER_REASONS
    rendered_kinds = {n["kind"] for outputs in everything for n in outputs["notifications"]}
    assert rendered_kinds == KNOWN_NOTIFICATION_KINDS
    rendered_source_types = {outputs["reward"]["source_type"] for outputs in everything}
    assert {DAILY_SOURCE, REFERRAL_SOURCE, REDEMPTION_SOURCE} < rendered_source_types
    assert rendered_source_types <= KNOWN_SOURCE_TYPES


@pytest.mark.parametrize(
    ("name", "field", "known"),
    [
        ("ledger_entry", "reason", KNOWN_LEDGER_REASONS),
        ("notification", "kind", KNOWN_NOTIFICATION_KINDS),
        ("reward_event", "source_type", KNOWN_SOURCE_TYPES),
        ("segment_event", "change", {ENTERED, LEFT}),
    ],
)
def test_known_values_are_listed_but_new_values_stay_valid(name, field, known):
    schema = load_schema(name)
    prop = schema["properties"][field]
    assert set(prop["examples"]) == known
    assert "enum" not in prop and "const" not in prop
    for value in known:
        assert f"`{value}`" in prop["description"]
    future = {**schema["examples"][0], field: "some_future_value"}
    assert validator(name).is_valid(future)


def _at(schema: dict[str, Any], pointer: str) -> dict[str, Any]:
    node: Any = schema
    for part in pointer.split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize(
    ("pointer", "known"),
    [
        ("$defs/coupon_result/properties/status", KNOWN_COUPON_STATUSES),
        ("$defs/breakdown/properties/bonuses/items/properties/reason", KNOWN_BONUS_REASONS),
        ("$defs/redemption/properties/status", KNOWN_REDEMPTION_STATUSES),
        ("$defs/redemption/properties/reason", KNOWN_REJECTION_REASONS),
    ],
)
def test_known_nested_reward_values_are_listed_but_not_enforced(pointer, known):
    prop = _at(load_schema("reward_event"), pointer)
    assert set(prop["examples"]) == known
    assert "enum" not in prop and "const" not in prop
    for value in known:
        assert f"`{value}`" in prop["description"]


def test_decoded_numbers_keep_the_json_digits():
    """The schema tells integrators to send numbers; the decoder keeps their exact digits."""
    decoded = decode_transaction(orjson.dumps(sale(liters=20.1, amount=0.3)), MAX_BYTES)
    assert decoded.liters == Decimal("20.1") and decoded.amount == Decimal("0.3")


# --- 7. Output timestamps: the instant sent, with the offset sent (issue 19) -------------

OUTPUT_TIMESTAMP_RULE = (
    "written `YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM` with the offset sent (`Z` and `-00:00` "
    "are written `+00:00`, `+01:00` stays `+01:00`; fractional seconds are cut to "
    "microseconds and written with six digits, or left out when they are zero"
)
"""The rule as the documents state it (each output schema's ``occurred_at``, both READMEs)."""
OUTPUT_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?[+-]\d\d:\d\d$")
SENT_AND_WRITTEN = {
    "2026-01-05T08:07:31Z": "2026-01-05T08:07:31+00:00",
    "2026-01-05T08:07:31-00:00": "2026-01-05T08:07:31+00:00",
    "2026-01-05T09:07:31+01:00": "2026-01-05T09:07:31+01:00",
    "2026-01-05T04:37:31-03:30": "2026-01-05T04:37:31-03:30",
    "2026-01-05T09:07:31.25+01:00": "2026-01-05T09:07:31.250000+01:00",
    "2026-01-05T08:07:31.000Z": "2026-01-05T08:07:31+00:00",
    "2026-01-05T08:07:31.123456789Z": "2026-01-05T08:07:31.123456+00:00",
    "2026-01-05T08:07:31.9999999Z": "2026-01-05T08:07:31.999999+00:00",
    # Spellings only the engine reads (LENIENT_IN_DECODER) come out the same way.
    "2026-01-05 08:07:31Z": "2026-01-05T08:07:31+00:00",
    "2026-01-05T09:07:31+0100": "2026-01-05T09:07:31+01:00",
    "2026-01-05T09:07:31+01": "2026-01-05T09:07:31+01:00",
}


def _occurred_ats(rendered: dict[str, Any]) -> list[str]:
    records = [*rendered["ledger"], rendered["reward"], *rendered["notifications"]]
    return [record["occurred_at"] for record in records + rendered["segments"]]


@pytest.mark.parametrize("sent, written", SENT_AND_WRITTEN.items())
def test_outputs_carry_the_instant_sent_written_with_the_offset_sent(sent, written):
    """A signup and a first sale sent with ``sent``: every output of both (ledger, reward,
    notifications, segment changes) carries ``written``, valid against its schema."""
    signup = decode_member_event(orjson.dumps(member_event(occurred_at=sent)), MAX_BYTES)
    state, outcome = apply_member_event(MemberState(), signup, PROGRAM, 1_767_600_452_118)
    rendered = [_validated(render_member_event(signup, outcome.applied, state, PROGRAM))]
    transaction = decode_transaction(orjson.dumps(sale(occurred_at=sent)), MAX_BYTES)
    state, outcome = apply_transaction(state, transaction, PROGRAM, 1_767_600_452_119)
    rendered.append(_validated(render_transaction(transaction, outcome.applied, state, PROGRAM)))
    stamps = [stamp for outputs in rendered for stamp in _occurred_ats(outputs)]
    assert len(stamps) >= 6 and rendered[1]["segments"]  # ledger, reward, notices, segments
    assert set(stamps) == {written}
    assert OUTPUT_TIMESTAMP.match(written)
    assert datetime.fromisoformat(written) == datetime.fromisoformat(sent.replace("Z", "+00:00"))


@pytest.mark.parametrize("offset", ["+01:00:30", "-00:00:01", "+01:00:00.5"])
def test_an_offset_of_seconds_is_refused_so_no_output_leaves_the_pattern(offset):
    for payload, decoder in (
        (sale(occurred_at=f"2026-01-05T09:07:31{offset}"), decode_transaction),
        (member_event(occurred_at=f"2026-01-05T09:07:31{offset}"), decode_member_event),
    ):
        with pytest.raises(InvalidEvent) as raised:
            decoder(orjson.dumps(payload), MAX_BYTES)
        assert raised.value.reason == "invalid_timestamp"


@pytest.mark.parametrize("name", ["ledger_entry", "reward_event", "notification", "segment_event"])
def test_every_output_occurred_at_states_how_it_is_written(name):
    description = load_schema(name)["properties"]["occurred_at"]["description"]
    assert OUTPUT_TIMESTAMP_RULE in description
    assert "`YYYY-MM-DDTHH:MM:SS.mmm+00:00`" in description  # the daily job's
    for untrue in ("as its producer sent it", "offset is kept", "not normalised"):
        assert untrue not in description


def test_both_readmes_state_how_output_timestamps_are_written():
    for path in (ROOT / "README.md", SCHEMA_DIR / "README.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert OUTPUT_TIMESTAMP_RULE in text, path
        assert "keeps the offset the producer sent" not in text, path


# --- 8. The input schemas' descriptions say what the engine does with each field --------
# Issue 19: member_event.schema.json said `referral_code` was not used by the program rules
# and that an erase "changes nothing else today", long after both had effects. The checks
# below derive what the engine does from the engine itself, driving the account processor
# with plain messages (no broker): each field of an input is set to two values, and what
# comes out (every record sent, the stored state, and probes after it: the profile view, a
# later sale, a daily job on the birthday) tells whether the engine acts on it, only stores
# it, or does nothing with it; each member event type is applied to a fresh and a known
# member and its effects observed. The descriptions must agree.

NOT_USED = ("not used", "unused", "informational", "has no effect", "no effect")
"""Phrases saying the engine does nothing with a field."""
NOT_READ = ("no program rule", "not read", "no rule")
"""Phrases saying no rule reads a field (true of a field that is only stored)."""
PROBE_DAY = date(2026, 5, 4)
"""The day after the event: a daily job runs on it, and the base birth date falls on it."""


def _clock(day: date, hour: int) -> str:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).isoformat()


EVENT_AT = _clock(PROBE_DAY - timedelta(days=1), 11)
MEMBER_VARIANTS: dict[str, tuple[Any, Any]] = {
    "locale": ("es", "it"),
    "birth_date": (f"1990-{PROBE_DAY:%m-%d}", "1990-01-01"),
    "consents": ({"marketing": True}, {"marketing": False}),
    "email": ("a@example.com", "b@example.com"),
    "phone": ("+34600000001", "+34600000002"),
    "referral_code": ("6FV109NX", "ZZZZZZZZ"),
}
"""Two values of each member event field that is neither an identity nor the event time."""
TRANSACTION_VARIANTS: dict[str, dict[str, tuple[Any, Any]]] = {
    "sale": {
        "station_id": ("ST-1", "ST-2"),
        "fuel_type": ("diesel", "lpg"),
        "liters": (20, 30),
        "amount": (30, 45),
        "currency": ("EUR", "USD"),
        "coupon_codes": (None, ["NEWSLETTER"]),
        "original_transaction_id": (None, "t-1"),
    },
    "refund": {
        "station_id": ("ST-1", "ST-2"),
        "fuel_type": ("diesel", "lpg"),
        "liters": (5, 10),
        "amount": (8, 16),
        "currency": ("EUR", "USD"),
        "coupon_codes": (None, ["NEWSLETTER"]),
        "original_transaction_id": ("t-1", "t-9"),
    },
}
IDENTITY_AND_TIME = {"transaction_id", "member_id", "event_id", "type", "occurred_at"}
"""Fields the engine reads by definition (keys, idempotency, event time)."""
PROFILE_FIELDS = {"locale", "birth_date", "consents", "email", "phone"}


@dataclass(frozen=True)
class Observed:
    records: tuple[tuple[str, bytes], ...]
    """Every record the event's batch sent (outputs, dead letters, forwards)."""
    state: bytes | None
    """The member's stored value after it."""
    later: bytes
    """What probes after it show: the profile view, a later sale, the next daily job."""


def _drive(values: list[tuple[str, dict[str, Any]]]) -> Observed:
    """``values`` on their topics, one batch each, through the account processor; what the
    last one did."""
    processor = account_processor()
    key = MEMBER.encode()
    for offset, (topic, value) in enumerate(values):
        coupon = codes.coupon_code(MEMBER, "n-1")
        if value.get("coupon_codes"):
            value = {**value, "coupon_codes": [coupon]}
        batch = run_batch(processor, on_owner(topic, key, orjson.dumps(value), offset))
    db = processor.tables[processor.members].data._db_for_partition(
        loyalty.streams.partitioning.owner_partition(key, PARTITIONS)
    )
    value = db.get(key)
    state = decode_state(value)
    probes: list[Any] = [
        loyalty.core.profile.member_profile(MEMBER, state, PROGRAM, 1_777_900_000_000)
    ]
    later = decode_transaction(orjson.dumps(sale(occurred_at=_clock(PROBE_DAY, 18))), MAX_BYTES)
    after, outcome = apply_transaction(state, later, PROGRAM, 1)
    probes.append(render_transaction(later, outcome.applied, after, PROGRAM))
    daily_state, daily = apply_daily(state, PROBE_DAY, PROGRAM, 1, MEMBER)
    if daily is not None:
        probes.append(render_daily(MEMBER, PROBE_DAY, daily.applied, daily_state, PROGRAM))
    records = tuple(_comparable(record[0], record[2]) for record in batch.unordered + batch.outputs)
    return Observed(records, value, orjson.dumps(probes, default=_plain))


def _comparable(topic: str, value: bytes) -> tuple[str, bytes]:
    """A record as sent; a dead letter by its reason only (it carries the input's bytes)."""
    if topic == TOPICS.deadletter:
        return topic, orjson.loads(value)["reason"].encode()
    return topic, value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)  # type: ignore[arg-type]
    raise TypeError(type(value))


def _base_member_event(kind: str) -> dict[str, Any]:
    first = {name: values[0] for name, values in MEMBER_VARIANTS.items()}
    return member_event(event_id="e-1", type=kind, occurred_at=EVENT_AT, **first)


def _known_member() -> list[tuple[str, dict[str, Any]]]:
    """A member enrolled by a signup without a code, holding a newsletter coupon and a sale."""
    first_day, second_day = date(2026, 4, 20), date(2026, 4, 21)
    newsletter = {"event_id": "n-1", "type": "newsletter_subscribed"}
    return [
        ("loyalty.members", member_event(event_id="s-0", occurred_at=_clock(first_day, 9))),
        ("loyalty.members", member_event(**newsletter, occurred_at=_clock(first_day, 10))),
        (
            "loyalty.transactions",
            sale(transaction_id="t-1", liters=20, occurred_at=_clock(second_day, 12)),
        ),
    ]


def _classify(observe: Any, first: Any, second: Any) -> str:
    """``acts`` (what comes out or shows later differs), ``stored`` (only the stored value
    differs) or ``unused``."""
    a, b = observe(first), observe(second)
    if a.records != b.records or a.later != b.later:
        return "acts"
    return "stored" if a.state != b.state else "unused"


def _member_field_use(kind: str, name: str) -> str:
    def observe(value: Any) -> Observed:
        event = {**_base_member_event(kind), name: value}
        return _drive([*_known_member(), ("loyalty.members", event)])

    return _classify(observe, *MEMBER_VARIANTS[name])


def _transaction_field_use(kind: str, name: str) -> str:
    def observe(value: Any) -> Observed:
        if kind == "sale":
            event = sale(transaction_id="t-2", occurred_at=EVENT_AT, **{name: value})
        else:
            fields = {"transaction_id": "r-1", "original_transaction_id": "t-1", "liters": 5}
            event = refund(**{**fields, "occurred_at": EVENT_AT, name: value})
        if value is None:
            event.pop(name)
        return _drive([*_known_member(), ("loyalty.transactions", event)])

    return _classify(observe, *TRANSACTION_VARIANTS[kind][name])


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.;])\s+(?=[A-Z(`])", text) if s]


def _says_ignored_on(text: str, kind: str) -> bool:
    """A sentence of ``text`` says the field is ignored on ``kind`` (or on other types)."""
    return any("ignored" in s and (kind in s or "other type" in s) for s in _sentences(text))


def _type_clauses(schema: str) -> dict[str, str]:
    """The clause of each type in the schema's ``type`` description (``\\`a\\`, \\`b\\`:``
    starts the clause of a and b)."""
    text = load_schema(schema)["properties"]["type"]["description"]
    heads = list(re.finditer(r"((?:`[a-z_]+`(?:, )?)+):", text))
    clauses = {}
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(text)
        for kind in re.findall(r"`([a-z_]+)`", head.group(1)):
            clauses[kind] = text[head.end() : end]
    return clauses


def test_the_variant_tables_cover_every_field_of_the_input_schemas():
    member_fields = set(load_schema("member_event")["properties"]) - IDENTITY_AND_TIME
    assert set(MEMBER_VARIANTS) == member_fields
    transaction_fields = set(load_schema("transaction")["properties"]) - IDENTITY_AND_TIME
    for kind in TRANSACTION_TYPES:
        assert set(TRANSACTION_VARIANTS[kind]) == transaction_fields


def _check_field(schema: str, name: str, uses: dict[str, str], clauses: dict[str, str]) -> None:
    description = load_schema(schema)["properties"][name]["description"]
    lowered = description.lower()
    said_unused = [phrase for phrase in NOT_USED if phrase in lowered]
    said_unread = [phrase for phrase in NOT_READ if phrase in lowered]
    if set(uses.values()) == {"unused"}:
        assert said_unused, f"{schema}.{name}: the engine does nothing with it; say so"
        return
    assert not said_unused, f"{schema}.{name} is used ({uses}) but says {said_unused}"
    if "acts" in uses.values():
        assert not said_unread, f"{schema}.{name} acts ({uses}) but says {said_unread}"
    else:  # only stored
        assert "stored" in lowered, f"{schema}.{name} is stored ({uses}): say so"
    for kind, use in uses.items():
        if use != "unused":
            continue
        clause = clauses.get(kind, "")
        in_clause = "ignored" in clause and (
            f"`{name}`" in clause or (name in PROFILE_FIELDS and "profile fields" in clause)
        )
        assert in_clause or _says_ignored_on(description, kind), (
            f"{schema}.{name} is ignored on {kind}: its description or the {kind} clause of "
            "`type` must say so"
        )


@pytest.mark.parametrize("name", sorted(MEMBER_VARIANTS))
def test_member_event_field_descriptions_match_what_the_engine_does_with_them(name):
    uses = {kind: _member_field_use(kind, name) for kind in MEMBER_EVENT_TYPES}
    expected_acting = {"signup"} if name == "referral_code" else set()
    assert expected_acting <= {kind for kind, use in uses.items() if use == "acts"}  # non-vacuous
    _check_field("member_event", name, uses, _type_clauses("member_event"))


@pytest.mark.parametrize("name", sorted(TRANSACTION_VARIANTS["sale"]))
def test_transaction_field_descriptions_match_what_the_engine_does_with_them(name):
    uses = {kind: _transaction_field_use(kind, name) for kind in TRANSACTION_TYPES}
    _check_field("transaction", name, uses, {})


# What a member event type can do, and the words its clause of `type` uses for it.
EFFECT_PHRASES = {
    "stores the profile": "the profile fields the event carries",
    "enrols": "enrols the member",
    "claims a referral": "claims the referral",
    "issues a coupon": "issues the program's newsletter coupon",
    "deletes the state": "deletes the member's state",
    "refuses later events": "dead-lettered `member_erased`",
}


def _type_effects(kind: str) -> set[str]:
    """What an event of ``kind`` carrying every field does to a fresh and to a known member."""
    effects: set[str] = set()
    for setup in ([], _known_member()):
        before = _drive(setup) if setup else None
        event = ("loyalty.members", _base_member_event(kind))
        after = _drive([*setup, event])
        later_sale = ("loyalty.transactions", sale(transaction_id="t-9", occurred_at=EVENT_AT))
        refused = _drive([*setup, event, later_sale])
        old = decode_state(before.state if before else None)
        new = decode_state(after.state)
        if after.state is not None and new.profile != old.profile:
            effects.add("stores the profile")
        if old.enrolled_at is None and new.enrolled_at is not None:
            effects.add("enrols")
        claims = [
            orjson.loads(value) for topic, value in after.records if topic == TOPICS.referrals
        ]
        if any(claim["op"] == "claim" for claim in claims):
            effects.add("claims a referral")
        newsletter = [c for c in new.coupons.values() if c.source == "newsletter"]
        if len(newsletter) > len([c for c in old.coupons.values() if c.source == "newsletter"]):
            effects.add("issues a coupon")
        if before is not None and before.state is not None and after.state is None:
            effects.add("deletes the state")
        letters = [
            value.decode()  # a dead letter's reason (see _comparable)
            for topic, value in refused.records
            if topic == TOPICS.deadletter
        ]
        if "member_erased" in letters:
            effects.add("refuses later events")
    return effects


@pytest.mark.parametrize("kind", MEMBER_EVENT_TYPES)
def test_each_member_event_type_is_described_by_what_the_engine_does(kind):
    effects = _type_effects(kind)
    assert effects, f"{kind} does nothing observable: the test is broken"
    clause = _type_clauses("member_event")[kind]
    described = {effect for effect, phrase in EFFECT_PHRASES.items() if phrase in clause}
    assert described == effects, f"`{kind}` clause: {clause!r}"
    for phrase in ("changes nothing", "nothing else", *NOT_USED):
        assert phrase not in clause.lower(), f"`{kind}` has effects {effects}: {phrase!r}"


def test_the_field_check_catches_the_referral_code_wording_of_issue_19(monkeypatch):
    """The wording member_event.schema.json had for `referral_code` until fcede6a."""
    schema = load_schema("member_event")
    schema["properties"]["referral_code"]["description"] = (
        "The referral code a new member typed at signup (another member's code, from their "
        "`welcome` notification); 1-64 characters. Validated, not used by the current program "
        "rules. Empty or not a string: invalid_type; longer: out_of_range."
    )
    monkeypatch.setattr(sys.modules[__name__], "load_schema", lambda name: schema)
    uses = {kind: _member_field_use(kind, "referral_code") for kind in MEMBER_EVENT_TYPES}
    with pytest.raises(AssertionError, match="is used"):
        _check_field("member_event", "referral_code", uses, _type_clauses("member_event"))
