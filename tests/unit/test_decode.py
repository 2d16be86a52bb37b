from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from schemas.decode import InvalidEvent, decode_transaction

LIMIT = 65536


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


def decode(value: dict) -> object:
    return decode_transaction(orjson.dumps(value), LIMIT)


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
    ],
)
def test_unparseable_values(raw, reason):
    with pytest.raises(InvalidEvent) as error:
        decode_transaction(raw, LIMIT)
    assert error.value.reason == reason


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
        ({"station_id": ""}, "invalid_type"),
    ],
)
def test_contract_violations_have_a_reason(overrides, reason):
    with pytest.raises(InvalidEvent) as error:
        decode(sale(**overrides))
    assert error.value.reason == reason
    assert error.value.message
