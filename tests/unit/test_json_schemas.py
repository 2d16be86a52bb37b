"""The JSON Schema files in ``schemas/json/`` agree with the engine.

Pure tests: no broker, no event loop. The input schema is checked against the decoder
(``schemas.decode``, the authoritative validator) on a table of payloads; the output
schemas are checked against records rendered by the engine itself.

jsonschema only checks ``format: date-time`` when the optional ``rfc3339-validator``
package is installed. Without it the timestamp ``pattern`` does the work and the case
that only a real date-time checker can catch (an impossible calendar date) is skipped.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

import tables.accounts
from agents.deadletters import dead_letter
from agents.transactions import PROCESSING_ERROR
from schemas import decode
from schemas.decode import InvalidEvent, decode_transaction
from schemas.outputs import FUEL_POINTS, REFUND_REVERSAL, WELCOME_BONUS
from schemas.state import MemberState
from streams.program import load_program
from streams.rewards import POINTS_EARNED, POINTS_REVERSED, WELCOME, render_outputs
from tables.accounts import apply_transaction

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "json"
SCHEMA_NAMES = ("transaction", "ledger_entry", "reward_event", "notification", "dead_letter")
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


def test_transaction_examples_are_accepted_by_the_decoder():
    for example in load_schema("transaction")["examples"]:
        decode_transaction(orjson.dumps(example), MAX_BYTES)


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
    "id of 64 non-ASCII code points": sale(member_id="\u00e9" * 63 + "\U0001f600"),
    "UTC written Z": sale(occurred_at="2026-01-05T08:07:31Z"),
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
    """decode_transaction's InvalidEvent.reason, i.e. the dead-letter reason."""
    field: str | None
    """The field a schema error must point at (None: the whole value)."""


LONG_ID = "x" * 65


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
    "empty station_id": Invalid(sale(station_id=""), "invalid_type", "station_id"),
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


# Where the decoder is more lenient than the published contract. The schema must reject
# these (a producer that validates never depends on the leniency). If decode.py is
# tightened, the first assertion fails: move the case to INVALID_TRANSACTIONS.
LENIENT_IN_DECODER: dict[str, dict[str, Any]] = {
    "space instead of T": sale(occurred_at="2026-01-05 08:07:31Z"),
    "ISO basic format": sale(occurred_at="20260105T080731Z"),
    "offset without colon": sale(occurred_at="2026-01-05T09:07:31+0100"),
    "offset hours only": sale(occurred_at="2026-01-05T09:07:31+01"),
    "offset with seconds": sale(occurred_at="2026-01-05T09:07:31+01:00:30"),
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


def _rendered_scenario() -> list[tuple[str, dict[str, Any]]]:
    """A new member's sale, a small sale, then two partial refunds of the first sale."""
    transactions = [
        sale(),  # enrols: fuel points with the volume multiplier + welcome bonus
        sale(transaction_id="small", liters=0.5, occurred_at="2026-01-06T07:00:00.5-03:00"),
        refund(liters=10),
        refund(transaction_id="second-refund", liters=50),  # capped by what is left
    ]
    state = MemberState()
    records: list[tuple[str, dict[str, Any]]] = []
    for index, payload in enumerate(transactions):
        transaction = decode_transaction(orjson.dumps(payload), MAX_BYTES)
        state, outcome = apply_transaction(state, transaction, PROGRAM, 1_767_600_452_118 + index)
        outputs = render_outputs(transaction, outcome.applied, PROGRAM)
        records += [("ledger_entry", _assert_matches("ledger_entry", e)) for e in outputs.ledger]
        records.append(("reward_event", _assert_matches("reward_event", outputs.reward)))
        records += [
            ("notification", _assert_matches("notification", n)) for n in outputs.notifications
        ]
    return records


def test_rendered_outputs_validate_against_their_schemas():
    records = _rendered_scenario()
    by_schema: dict[str, list[dict[str, Any]]] = {}
    for name, value in records:
        by_schema.setdefault(name, []).append(value)
    # Non-vacuous: every known reason, kind and both reward shapes were exercised.
    assert {e["reason"] for e in by_schema["ledger_entry"]} == {
        FUEL_POINTS,
        WELCOME_BONUS,
        REFUND_REVERSAL,
    }
    assert {n["kind"] for n in by_schema["notification"]} == {
        WELCOME,
        POINTS_EARNED,
        POINTS_REVERSED,
    }
    rewards = by_schema["reward_event"]
    assert [r["source_type"] for r in rewards] == ["sale", "sale", "refund", "refund"]
    assert rewards[0]["breakdown"]["multipliers"] and rewards[0]["breakdown"]["bonuses"]
    assert rewards[1]["points"] == 0 and rewards[1]["breakdown"]["multipliers"] == []
    assert rewards[3]["reversal"]["refunded_liters"] < rewards[3]["reversal"]["requested_liters"]
    reward_schema = validator("reward_event")
    for reward in rewards:  # breakdown/reversal must match source_type
        swapped = {**reward, "breakdown": reward["reversal"], "reversal": reward["breakdown"]}
        assert not reward_schema.is_valid(swapped)


class StandInMessage:
    """The attributes of a Faust ``Message`` that dead_letter reads."""

    def __init__(self, key: bytes | None, value: bytes | None, timestamp: float | None) -> None:
        self.topic = "loyalty.transactions"
        self.partition = 3
        self.offset = 1187
        self.timestamp = timestamp
        self.key = key
        self.value = value


@pytest.mark.parametrize(
    ("key", "value", "timestamp"),
    [
        (b"M-100234", orjson.dumps(sale(liters="20")), 1_767_600_451.907),
        (b"M-100234", b"\xff\xfe not UTF-8", 1_767_600_451.0),
        (None, None, None),
    ],
    ids=["json value", "binary value", "no key, tombstone, no timestamp"],
)
def test_dead_letter_validates_and_keeps_the_original_bytes(key, value, timestamp):
    with pytest.raises(InvalidEvent) as raised:
        decode_transaction(value, MAX_BYTES)
    error = raised.value
    record = dead_letter(
        StandInMessage(key, value, timestamp), error.reason, error.message, 1_767_600_452_131
    )
    emitted = _assert_matches("dead_letter", record)
    assert emitted["reason"] == error.reason
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
    account_reasons = _reasons_raised(tables.accounts, "RejectedTransaction")
    assert len(decoder_reasons) == 10 and len(account_reasons) == 2  # the scan found them
    reasons = decoder_reasons | account_reasons | {PROCESSING_ERROR}
    field = load_schema("dead_letter")["properties"]["reason"]
    assert set(field["examples"]) == reasons
    for reason in reasons:
        assert f"`{reason}`" in field["description"]
    assert "enum" not in field


@pytest.mark.parametrize(
    ("name", "field", "known"),
    [
        ("ledger_entry", "reason", {FUEL_POINTS, WELCOME_BONUS, REFUND_REVERSAL}),
        ("notification", "kind", {WELCOME, POINTS_EARNED, POINTS_REVERSED}),
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


def test_decoded_numbers_keep_the_json_digits():
    """The schema tells integrators to send numbers; the decoder keeps their exact digits."""
    decoded = decode_transaction(orjson.dumps(sale(liters=20.1, amount=0.3)), MAX_BYTES)
    assert decoded.liters == Decimal("20.1") and decoded.amount == Decimal("0.3")
