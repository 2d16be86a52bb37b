import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

import loyalty.streams.topics
from loyalty.cli.main import main
from loyalty.core.program import load_program
from loyalty.schemas.decode import (
    InvalidEvent,
    check_daily_date,
    decode_daily_command,
    decode_member_event,
    decode_redemption,
    decode_transaction,
    latest_daily_date,
    load_object,
)
from loyalty.schemas.ids import is_identifier, is_typed_code
from loyalty.streams.settings import from_env

LIMIT = 65536
NOT_AFTER_MS = 1_767_600_451_000
"""2026-01-05T08:07:31Z: the worker's clock plus the skew, in the tests that give one."""


def sale(**overrides) -> dict:
    value = {
        "transaction_id": "tx-1",
        "member_id": "m-1",
        "station_id": "st-9",
        "occurred_at": "2026-11-01T08:30:00+01:00",
        "fuel_type": "diesel",
        "liters": 20.5,
        "amount": 31.2,
    }
    value.update(overrides)
    return value


def member_event(**overrides) -> dict:
    value = {
        "event_id": "crm-1",
        "member_id": "m-1",
        "type": "signup",
        "occurred_at": "2026-01-03T18:30:00+01:00",
    }
    value.update(overrides)
    return value


def redemption(**overrides) -> dict:
    value = {
        "request_id": "rdm-1",
        "member_id": "m-1",
        "reward_id": "car-wash",
        "quantity": 1,
        "station_id": "st-9",
        "occurred_at": "2026-01-03T18:30:00+01:00",
    }
    value.update(overrides)
    return value


def decode(value: dict) -> object:
    return decode_transaction(orjson.dumps(value), LIMIT)


def reason_of(decoder, raw: bytes | None, **options) -> str:
    with pytest.raises(InvalidEvent) as error:
        decoder(raw, LIMIT, **options)
    assert error.value.message
    return error.value.reason


def test_valid_sale_with_defaults_and_extra_fields():
    transaction = decode(sale(pump=3))
    assert transaction.type == "sale"
    assert transaction.currency == "EUR"
    assert transaction.liters == Decimal("20.5")
    assert transaction.occurred_at == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    assert transaction.occurred_at.utcoffset() == timedelta(hours=1)


def test_zulu_timestamp_is_utc():
    transaction = decode(sale(occurred_at="2026-11-01T07:30:00Z"))
    assert transaction.occurred_at.tzinfo == UTC


def test_refund_carries_its_original():
    transaction = decode(sale(type="refund", original_transaction_id="tx-0"))
    assert transaction.original_transaction_id == "tx-0"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (None, "invalid_json"),
        (b"x" * (LIMIT + 1), "too_large"),
        (b'{"liters": NaN}', "invalid_json"),
        (b'{"liters": Infinity}', "invalid_json"),
        # a number beyond a double does not make NaN acceptable
        (b'{"liters": 1e400, "amount": NaN}', "invalid_json"),
        (b'{"a": 1e400, "b": ', "invalid_json"),
        (b'{"a": 1e400, "b": "\\ud800"}', "missing_field"),  # Python's json reads it
        (b"[" * 1100 + b"]" * 1100, "invalid_json"),
    ],
)
def test_unparseable_values(raw, reason):
    assert reason_of(decode_transaction, raw) == reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"member_id": None}, "missing_field"),
        ({"transaction_id": 42}, "invalid_type"),
        ({"transaction_id": ""}, "out_of_range"),
        ({"member_id": "m" * 65}, "out_of_range"),
        ({"liters": "20"}, "invalid_type"),
        ({"liters": True}, "invalid_type"),
        ({"liters": 0}, "out_of_range"),
        ({"liters": -3}, "out_of_range"),
        ({"liters": 1000.01}, "out_of_range"),
        ({"amount": -0.01}, "out_of_range"),
        ({"occurred_at": "2026-11-01T08:30:00"}, "naive_timestamp"),
        ({"occurred_at": "yesterday"}, "invalid_timestamp"),
        ({"occurred_at": 1700000000}, "invalid_type"),
        ({"type": "void"}, "invalid_value"),
        ({"type": "refund"}, "missing_field"),
        ({"coupon_codes": "WELCOME"}, "invalid_type"),
        ({"station_id": ""}, "out_of_range"),
    ],
)
def test_contract_violations_have_a_reason(overrides, reason):
    with pytest.raises(InvalidEvent) as error:
        decode(sale(**overrides))
    assert error.value.reason == reason
    assert error.value.message


# --- ids ----------------------------------------------------------------------------------

ID_FIELDS = [
    (decode_transaction, sale, "transaction_id"),
    (decode_transaction, sale, "member_id"),
    (decode_transaction, sale, "station_id"),
    (decode_transaction, lambda **o: sale(type="refund", **o), "original_transaction_id"),
    (decode_member_event, member_event, "event_id"),
    (decode_member_event, member_event, "member_id"),
    (decode_redemption, redemption, "request_id"),
    (decode_redemption, redemption, "member_id"),
    (decode_redemption, redemption, "reward_id"),
    (decode_redemption, redemption, "station_id"),
]
FIELD_IDS = [f"{decoder.__name__[7:]}.{name}" for decoder, _, name in ID_FIELDS]


@pytest.mark.parametrize(
    "text",
    [
        "a b",
        "a\x00b",
        "a\nb",
        "ab\n",
        "a\tb",
        "a\u200bb",
        "a\u202eb",
        "\u00e9",
        "a/b",
        "a#b",
        "-ab",
        ".ab",
        "a\ufeff",
    ],
)
@pytest.mark.parametrize(("decoder", "build", "name"), ID_FIELDS, ids=FIELD_IDS)
def test_an_id_with_a_character_outside_the_grammar_is_invalid_value(decoder, build, name, text):
    assert not is_identifier(text)
    assert reason_of(decoder, orjson.dumps(build(**{name: text}))) == "invalid_value"


@pytest.mark.parametrize(("decoder", "build", "name"), ID_FIELDS, ids=FIELD_IDS)
def test_an_id_of_the_wrong_length_is_out_of_range_and_64_grammar_characters_are_accepted(
    decoder, build, name
):
    for text in ("", "a" * 65, "\u00e9" * 65):
        assert reason_of(decoder, orjson.dumps(build(**{name: text}))) == "out_of_range"
    longest = "A" + "b.c_d:e@f+g-9" * 4 + "z" * 11
    assert len(longest) == 64 and is_identifier(longest)
    decoder(orjson.dumps(build(**{name: longest})), LIMIT)


def test_typed_codes_may_hold_spaces_but_nothing_else_outside_the_grammar():
    assert is_typed_code("r7z xnq sdj3") and is_typed_code("R7ZXN-QSDJ3")
    assert not is_typed_code(" R7Z") and not is_typed_code("R7Z\u200b") and not is_typed_code("")
    decoded = decode(sale(coupon_codes=["r7z xnq sdj3", "R7ZXN-QSDJ3"]))
    assert decoded.coupon_codes == ("r7z xnq sdj3", "R7ZXN-QSDJ3")
    event = decode_member_event(orjson.dumps(member_event(referral_code="6fv 109-nx")), LIMIT)
    assert event.referral_code == "6fv 109-nx"


# --- strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"fuel_type": "d" * 32}, None),
        ({"fuel_type": "Gasoline-95.E10_x"}, None),
        ({"fuel_type": "d" * 33}, "out_of_range"),
        ({"fuel_type": ""}, "invalid_type"),
        ({"fuel_type": "super plus"}, "invalid_value"),
        ({"fuel_type": "diesel\x00"}, "invalid_value"),
        ({"fuel_type": "gas\u00f3leo"}, "invalid_value"),
        ({"currency": "USD"}, None),
        ({"currency": None}, None),
        ({"currency": "usd"}, "invalid_value"),
        ({"currency": "U$D"}, "invalid_value"),
        ({"currency": "\u00c9UR"}, "invalid_value"),
        ({"currency": "EURO"}, "out_of_range"),
        ({"currency": "E"}, "out_of_range"),
        ({"currency": ""}, "invalid_type"),
        ({"currency": 978}, "invalid_type"),
        ({"coupon_codes": ["C"] * 10}, None),
        ({"coupon_codes": ["C"] * 11}, "out_of_range"),
        ({"coupon_codes": ["c" * 64]}, None),
        ({"coupon_codes": ["c" * 65]}, "out_of_range"),
        ({"coupon_codes": ["SPRING\n10"]}, "invalid_value"),
        ({"coupon_codes": ["SPRING\u202e10"]}, "invalid_value"),
        ({"coupon_codes": [""]}, "invalid_type"),
        ({"coupon_codes": [["X"]]}, "invalid_type"),
    ],
)
def test_bounds_of_the_strings_of_a_transaction(overrides, reason):
    if reason is None:
        decode(sale(**overrides))
    else:
        assert reason_of(decode_transaction, orjson.dumps(sale(**overrides))) == reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"locale": "es"}, None),
        ({"locale": "es-ES-u-nu-latn1"}, None),
        ({"locale": "pt_BR"}, None),
        ({"locale": "e"}, "out_of_range"),
        ({"locale": "l" * 17}, "out_of_range"),
        ({"locale": ""}, "invalid_type"),
        ({"locale": "es ES"}, "invalid_value"),
        ({"locale": "\u00e9s"}, "invalid_value"),
        ({"locale": "es\x00"}, "invalid_value"),
        ({"email": "a@b"}, None),
        ({"email": "\u00f1and\u00fa@correo.es"}, None),
        ({"email": "a" * 64 + "@" + "b" * 189}, None),
        ({"email": "a" * 64 + "@" + "b" * 190}, "out_of_range"),
        ({"email": "@b"}, "out_of_range"),
        ({"email": ""}, "invalid_type"),
        ({"email": "ana.example.com"}, "invalid_value"),
        ({"email": "ana @example.com"}, "invalid_value"),
        ({"email": "ana@example.com\n"}, "invalid_value"),
        ({"email": "ana\t@example.com"}, "invalid_value"),
        ({"email": "ana\x00@example.com"}, "invalid_value"),
        ({"email": "ana\u200b@example.com"}, "invalid_value"),
        ({"email": "ana\u202e@example.com"}, "invalid_value"),
        ({"email": "ana\u00a0@example.com"}, "invalid_value"),
        ({"email": "ana\u2028@example.com"}, "invalid_value"),
        ({"phone": "+34 (600) 123-123"}, None),
        ({"phone": "+" + "3" * 31}, None),
        ({"phone": "+" + "3" * 32}, "out_of_range"),
        ({"phone": ""}, "invalid_type"),
        ({"phone": "600 CALL ME"}, "invalid_value"),
        ({"phone": "600\n123"}, "invalid_value"),
        ({"phone": "\u0666\u0660\u0660"}, "invalid_value"),  # Arabic-Indic digits
        ({"referral_code": "r" * 64}, None),
        ({"referral_code": "r" * 65}, "out_of_range"),
        ({"referral_code": "6FV1\u200b09NX"}, "invalid_value"),
        ({"referral_code": " 6FV109NX"}, "invalid_value"),
    ],
)
def test_bounds_of_the_strings_of_a_member_event(overrides, reason):
    raw = orjson.dumps(member_event(**overrides))
    if reason is None:
        decode_member_event(raw, LIMIT)
    else:
        assert reason_of(decode_member_event, raw) == reason


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("liters", "expected"),
    [
        (0.001, Decimal("0.001")),
        (1000, Decimal(1000)),
        (1000.0, Decimal("1000.0")),
        (20.125, Decimal("20.125")),
        (0.1, Decimal("0.1")),
        (999.999, Decimal("999.999")),
    ],
)
def test_liters_within_bounds_keep_their_digits(liters, expected):
    assert decode(sale(liters=liters)).liters == expected


@pytest.mark.parametrize(
    "liters",
    [0, 0.0, -0.0, 0.0009, 1e-300, 5e-324, 1000.001, 1e18, 1.7976931348623157e308, -1, 2**64 - 1]
    + [20.1255, 0.30000000000000004, 1.0001],
)
def test_liters_out_of_bounds_or_too_precise_are_out_of_range(liters):
    assert reason_of(decode_transaction, orjson.dumps(sale(liters=liters))) == "out_of_range"


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (0, None),
        (0.0, None),
        (1_000_000, None),
        (999_999.999, None),
        (34.835, None),
        (1_000_000.001, "out_of_range"),
        (1e18, "out_of_range"),
        (2**63, "out_of_range"),
        (-(2**63), "out_of_range"),
        (34.8351, "out_of_range"),
        (1e-5, "out_of_range"),
        (-0.001, "out_of_range"),
        ("1", "invalid_type"),
        (False, "invalid_type"),
        ([1], "invalid_type"),
        ({"value": 1}, "invalid_type"),
    ],
)
def test_bounds_and_precision_of_amount(amount, reason):
    if reason is None:
        assert decode(sale(amount=amount)).amount == Decimal(str(amount))
    else:
        assert reason_of(decode_transaction, orjson.dumps(sale(amount=amount))) == reason


@pytest.mark.parametrize(
    "spelling",
    [
        b"1e400",
        b"-1e400",
        b"1E+309",
        b"1" + b"0" * 400,
        b"-" + b"9" * 5000,
        b"18446744073709551616",
        b"-9223372036854775809",
    ],
)
@pytest.mark.parametrize("name", ["liters", "amount"])
def test_numbers_beyond_a_double_or_64_bits_are_out_of_range_not_invalid_json(name, spelling):
    raw = orjson.dumps(sale(**{name: 7})).replace(
        f'"{name}":7'.encode(), f'"{name}":'.encode() + spelling
    )
    assert reason_of(decode_transaction, raw) == "out_of_range"


def test_a_number_beyond_a_double_in_an_unknown_field_is_ignored():
    raw = orjson.dumps(sale(pump=7)).replace(b'"pump":7', b'"pump":1e999')
    assert decode_transaction(raw, LIMIT).liters == Decimal("20.5")
    raw = orjson.dumps(sale(pump=7)).replace(b'"pump":7', b'"pump":' + b"7" * 5000)
    assert decode_transaction(raw, LIMIT).amount == Decimal("31.2")


@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        (b"1", None),
        (b"100", None),
        (b"0", "out_of_range"),
        (b"101", "out_of_range"),
        (b"-1", "out_of_range"),
        (b"0.5", "out_of_range"),
        (b"1e30", "out_of_range"),
        (b"1e400", "out_of_range"),
        (b"18446744073709551615", "out_of_range"),
        (b"1" * 400, "out_of_range"),
        (b"2.5", "invalid_type"),
        (b"2.0", "invalid_type"),
        (b"true", "invalid_type"),
        (b'"2"', "invalid_type"),
    ],
)
def test_bounds_of_quantity(spelling, reason):
    raw = orjson.dumps(redemption(quantity=7)).replace(b'"quantity":7', b'"quantity":' + spelling)
    if reason is None:
        assert decode_redemption(raw, LIMIT).quantity == int(spelling)
    else:
        assert reason_of(decode_redemption, raw) == reason


# --- occurred_at --------------------------------------------------------------------------

BUILDERS = [(decode_transaction, sale), (decode_member_event, member_event)]
BUILDERS += [(decode_redemption, redemption)]
BUILDER_IDS = ["transaction", "member_event", "redemption"]


@pytest.mark.parametrize(
    ("occurred_at", "reason"),
    [
        ("2000-01-01T00:00:00Z", None),
        ("2000-01-01T00:00:00-01:00", None),
        ("9998-12-31T23:59:59Z", None),
        ("1999-12-31T23:59:59.999999Z", "out_of_range"),
        ("2000-01-01T00:30:00+01:00", "out_of_range"),
        ("1970-01-01T00:00:00Z", "out_of_range"),
        ("0001-01-01T00:00:00-05:00", "out_of_range"),
        ("0001-01-01T00:00:00+05:00", "out_of_range"),
        ("0001-01-01T00:00:00+23:59", "out_of_range"),
        ("9999-01-01T00:00:00Z", "out_of_range"),
        ("9999-12-31T23:59:59-05:00", "out_of_range"),
        ("9999-12-31T23:59:59.999999-23:59", "out_of_range"),
    ],
)
@pytest.mark.parametrize(("decoder", "build"), BUILDERS, ids=BUILDER_IDS)
def test_occurred_at_lies_from_2000_and_never_overflows(decoder, build, occurred_at, reason):
    raw = orjson.dumps(build(occurred_at=occurred_at))
    if reason is None:
        decoder(raw, LIMIT)
    else:
        assert reason_of(decoder, raw) == reason


@pytest.mark.parametrize(("decoder", "build"), BUILDERS, ids=BUILDER_IDS)
def test_occurred_at_later_than_the_clock_plus_skew_is_a_future_timestamp(decoder, build):
    at_limit = orjson.dumps(build(occurred_at="2026-01-05T09:07:31+01:00"))
    decoder(at_limit, LIMIT, not_after_ms=NOT_AFTER_MS)
    for later in ("2026-01-05T08:07:31.001Z", "2026-01-05T03:07:32-05:00", "9998-12-30T00:00:00Z"):
        raw = orjson.dumps(build(occurred_at=later))
        assert reason_of(decoder, raw, not_after_ms=NOT_AFTER_MS) == "future_timestamp"
        decoder(raw, LIMIT)  # without a clock only the fixed bounds apply
    # a malformed record is reported for its shape, not its time
    raw = orjson.dumps(build(occurred_at="2030-01-01T00:00:00Z", member_id=""))
    assert reason_of(decoder, raw, not_after_ms=NOT_AFTER_MS) == "out_of_range"


def test_a_station_report_in_the_future_is_refused_too():
    raw = orjson.dumps(
        {
            "type": "fulfilled",
            "request_id": "rdm-1",
            "station_id": "st-9",
            "occurred_at": "2027-01-01T00:00:00Z",
        }
    )
    assert reason_of(decode_redemption, raw, not_after_ms=NOT_AFTER_MS) == "future_timestamp"


# --- the daily job's date -----------------------------------------------------------------


def daily(day: object) -> bytes:
    return orjson.dumps({"command": "daily", "date": day})


def test_latest_daily_date_is_tomorrow_in_the_program_time_zone():
    # 23:30 UTC on 4 December is already 5 December in Madrid, still 4 December in New York.
    now_ms = int(datetime(2026, 12, 4, 23, 30, tzinfo=UTC).timestamp() * 1000)
    assert latest_daily_date(now_ms, "Europe/Madrid") == date(2026, 12, 6)
    assert latest_daily_date(now_ms, "America/New_York") == date(2026, 12, 5)
    assert latest_daily_date(now_ms, "UTC") == date(2026, 12, 5)


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        ("2026-12-05", None),
        ("2026-12-04", None),
        ("2000-01-01", None),
        ("2026-12-06", "out_of_range"),
        ("2099-01-01", "out_of_range"),
        ("9999-12-31", "out_of_range"),
        ("1999-12-31", "out_of_range"),
        ("0001-01-01", "out_of_range"),
        ("2026-02-30", "invalid_value"),
        ("tomorrow", "invalid_value"),
        (20261205, "invalid_value"),
        (None, "missing_field"),
    ],
)
def test_daily_command_date_from_2000_to_latest(day, reason):
    latest = date(2026, 12, 5)
    if reason is None:
        assert decode_daily_command(daily(day), latest) == date.fromisoformat(day)
    else:
        with pytest.raises(InvalidEvent) as error:
            decode_daily_command(daily(day), latest)
        assert error.value.reason == reason


def test_daily_command_shape():
    latest = date(2026, 12, 5)
    for raw, reason in [
        (orjson.dumps({"command": "nightly", "date": "2026-12-01"}), "invalid_value"),
        (b'{"command": "daily", "date": "2026-12-01", "date": "9999-12-31"}', "duplicate_key"),
        (b"daily", "invalid_json"),
    ]:
        with pytest.raises(InvalidEvent) as error:
            decode_daily_command(raw, latest)
        assert error.value.reason == reason
    assert check_daily_date(latest, latest) == latest


@pytest.mark.parametrize(
    ("day", "message"),
    [
        ("9999-12-31", "tomorrow in the program's time zone"),
        ("1999-12-31", "2000-01-01"),
        ("2026-13-01", "not a YYYY-MM-DD date"),
    ],
)
def test_loyalty_daily_refuses_a_date_out_of_bounds_before_sending(
    monkeypatch, capsys, day, message
):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be sent for a refused date")

    monkeypatch.setattr(loyalty.streams.topics, "ensure_topics", refuse)
    monkeypatch.setattr(loyalty.streams.topics, "send_daily_commands", refuse)
    assert main(["daily", "--date", day]) == 2
    error = capsys.readouterr().err
    assert day in error and message in error


def test_loyalty_daily_sends_a_date_up_to_tomorrow(monkeypatch):
    sent = []
    monkeypatch.setattr(loyalty.streams.topics, "ensure_topics", lambda settings: [])
    monkeypatch.setattr(
        loyalty.streams.topics, "send_daily_commands", lambda settings, day: sent.append(day) or 8
    )
    timezone = load_program(from_env().program_path).timezone
    latest = latest_daily_date(time.time_ns() // 1_000_000, timezone)
    assert main(["daily", "--date", latest.isoformat()]) == 0
    assert main(["daily"]) == 0  # today
    assert sent[0] == latest
    assert sent[1] in (latest - timedelta(days=1), latest)  # midnight may pass in between


# --- duplicate keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"liters": 10, "amount": 1, "liters": 900}', "liters"),
        (b'{"a": 1, "a": 1}', "a"),
        (b'{"consents": {"marketing": true, "marketing": false}}', "marketing"),
        (b'{"x": [1, {"k": "v:1", "k": "v:2"}]}', "k"),
        (b'{"x": [[], [{}, {"k": 1, "k": 2}]]}', "k"),
        (b'{"li\\u0074ers": 10, "liters": 900}', "liters"),  # an escape spells the same key
        (b'{"a:b": 1, "a:b": 2}', "a:b"),
        (b'{"a" :1,"b":2,  "a"  :  3}', "a"),
        (b'{"": 1, "": 2}', ""),
        (b'{"t": "x\\"y", "t": "z"}', "t"),
        ('{"caf\u00e9": 1, "cafe\u0301": 2, "caf\u00e9": 3}'.encode(), "caf\u00e9"),
        (b'{"d":' + b'{"d":' * 300 + b'{"k": 1, "k": 2}' + b"}" * 300 + b"}", "k"),
    ],
)
def test_a_key_written_twice_in_one_object_is_a_duplicate_key(raw, key):
    with pytest.raises(InvalidEvent) as error:
        load_object(raw, LIMIT)
    assert error.value.reason == "duplicate_key"
    assert repr(key) in error.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": {"x": 1}, "b": {"x": 2}}',  # the same key in two objects
        b'{"a": [{"x": 1}, {"x": 2}]}',
        b'{"a": "x:y:z", "b": ":", "c": "{\\"a\\": 1, \\"a\\": 2}"}',  # keys inside a string
        b'{"a\\u003a": "\\u003a", "b": 1}',  # escaped colons
        b'{"a": "\\u0061", "\\u0062": 2}',
        '{"caf\u00e9": 1, "cafe\u0301": 2}'.encode(),  # two spellings, two keys
        b'{"d":' + b'{"d":' * 300 + b'{"k": 1}' + b"}" * 300 + b"}",
        b'{"s": "' + b"\\\\" * 100 + b'", "t": 1}',
    ],
)
def test_distinct_keys_are_not_duplicates(raw):
    assert isinstance(load_object(raw, LIMIT), dict)


def test_a_duplicated_key_changes_nothing_any_more():
    # Last-one-wins would have credited 900 litres.
    raw = orjson.dumps(sale(liters=10))[:-1] + b',"liters":900}'
    assert reason_of(decode_transaction, raw) == "duplicate_key"
    raw = orjson.dumps(member_event()).replace(
        b'"type":"signup"', b'"type":"signup","type":"erase"'
    )
    assert reason_of(decode_member_event, raw) == "duplicate_key"


def test_a_negative_zero_amount_is_zero():
    amount = decode(sale(amount=-0.0)).amount
    assert amount == 0 and not amount.is_signed()
