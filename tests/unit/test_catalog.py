"""The rewards catalog without a broker: records and catalog files, the worker's view of
the catalog and the reserved stock, ``GET /catalog`` and ``GET /members/{id}/redemptions``
as answers, their OpenAPI description, and ``loyalty catalog load`` refusing a bad file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import schemathesis

from loyalty.agents.catalog import catalog_answer
from loyalty.agents.openapi import OPENAPI_DOCUMENT
from loyalty.agents.profiles import RETRY_AFTER_S, member_redemptions, redemptions_answer
from loyalty.cli.main import main
from loyalty.core.catalog import CatalogView
from loyalty.schemas.catalog import (
    CatalogError,
    Reward,
    decode_reward,
    encode_reward,
    load_catalog_file,
)
from loyalty.schemas.state import MemberState, Redemption, RewardStock, encode_state, encode_stock
from loyalty.streams.settings import PROGRAM_DIR
from tests.unit.builders import MEMBER

EXAMPLE_CATALOG = PROGRAM_DIR / "catalog.toml"

COFFEE = Reward("coffee", {"en": "Coffee", "es": "Café"}, 80, 10)
WASH = Reward("car-wash", {"en": "Car wash"}, 450, 3, per_member_limit=2)
VOUCHER = Reward("fuel-voucher", {"en": "Fuel voucher", "pl": "Bon"}, 500, None)


def record(**fields: Any) -> bytes:
    """A catalog value: ``coffee`` as published, with ``fields`` changed (``...`` removes)."""
    value: dict[str, Any] = orjson.loads(encode_reward(COFFEE))
    value.update(fields)
    return orjson.dumps({name: v for name, v in value.items() if v is not ...})


def conforms(body: Any, schema_name: str) -> None:
    """Validate ``body`` against a schema of the OpenAPI document's components."""
    schema = {**OPENAPI_DOCUMENT, "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(orjson.loads(orjson.dumps(body)))


# --- catalog records --------------------------------------------------------------------------


@pytest.mark.parametrize("reward", [COFFEE, WASH, VOUCHER])
def test_a_record_decodes_to_the_reward_it_encodes(reward):
    assert decode_reward(encode_reward(reward)) == reward


def test_a_record_carries_every_field_null_for_none():
    assert orjson.loads(encode_reward(VOUCHER)) == {
        "reward_id": "fuel-voucher",
        "name": {"en": "Fuel voucher", "pl": "Bon"},
        "cost_points": 500,
        "stock": None,
        "active": True,
        "per_member_limit": None,
    }


def test_a_record_may_leave_out_the_optional_fields_and_carry_unknown_ones():
    value = orjson.dumps(
        {"reward_id": "coffee", "name": {"en": "Coffee"}, "cost_points": 80, "stock": 5, "x": 1}
    )
    reward = decode_reward(value)
    assert (reward.active, reward.per_member_limit, reward.stock) == (True, None, 5)


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        (record(reward_id=...), "reward_id", "is required"),
        (record(reward_id=""), "reward_id", "must be an id: 1 to 64 characters"),
        (record(reward_id="x" * 65), "reward_id", "must be an id: 1 to 64 characters"),
        (record(reward_id="tab\there"), "reward_id", "must be an id"),
        (record(reward_id="car wash"), "reward_id", "must be an id"),
        (record(reward_id=7), "reward_id", "must be an id"),
        (record(name=...), "name", "is required"),
        (record(name={"es": "Café"}), "name", "'en' entry"),
        (record(name={"en": ""}), "name.en", "non-empty"),
        (record(name={"en": "Coffee", "es": 3}), "name.es", "non-empty string"),
        (record(name="Coffee"), "name", "by locale"),
        (record(cost_points=0), "cost_points", "integer from 1 to 1,000,000,000, got 0"),
        (record(cost_points=1.5), "cost_points", "integer from 1 to 1,000,000,000"),
        (record(cost_points=True), "cost_points", "integer from 1 to 1,000,000,000"),
        (record(cost_points="80"), "cost_points", "integer from 1 to 1,000,000,000"),
        (record(cost_points=10**9 + 1), "cost_points", "integer from 1 to 1,000,000,000"),
        (record(stock=...), "stock", "is required"),
        (record(stock=-1), "stock", "integer >= 0 or null, got -1"),
        (record(stock="unlimited"), "stock", "or null"),
        (record(active="yes"), "active", "true or false"),
        (record(per_member_limit=0), "per_member_limit", ">= 1"),
    ],
)
def test_an_invalid_record_names_the_field(value, field, reason):
    with pytest.raises(CatalogError, match=reason) as raised:
        decode_reward(value)
    assert raised.value.field == field
    assert f"field '{field}'" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "reason"), [(b"{", "not valid JSON"), (b"[1]", "must be a JSON object")]
)
def test_a_record_that_is_no_json_object_is_refused(value, reason):
    with pytest.raises(CatalogError, match=reason):
        decode_reward(value)


def test_an_error_after_the_reward_id_names_the_reward():
    with pytest.raises(CatalogError, match=r"catalog record \('coffee'\): field 'cost_points'"):
        decode_reward(record(cost_points=-3))


@pytest.mark.parametrize(
    ("locale", "name"),
    [(None, "Coffee"), ("", "Coffee"), ("es", "Café"), ("es-ES", "Café"), ("es_MX", "Café")]
    + [("it", "Coffee"), ("ES", "Coffee")],
)
def test_the_display_name_falls_back_to_the_language_then_english(locale, name):
    assert COFFEE.display_name(locale) == name


# --- catalog files ----------------------------------------------------------------------------


def test_the_example_catalog_has_the_documented_rewards():
    rewards = {reward.reward_id: reward for reward in load_catalog_file(EXAMPLE_CATALOG)}
    assert set(rewards) == {
        "car-wash",
        "coffee",
        "fuel-voucher-5eur",
        "screen-wash-5l",
        "sunshade-summer-2025",
    }
    for reward in rewards.values():
        assert set(reward.name) == {"en", "es", "it", "pl"}
        assert decode_reward(encode_reward(reward)) == reward
    assert rewards["fuel-voucher-5eur"].stock is None
    assert rewards["screen-wash-5l"].per_member_limit == 2
    assert [r.reward_id for r in rewards.values() if not r.active] == ["sunshade-summer-2025"]


ENTRY = """
[[rewards]]
reward_id = "coffee"
name = { en = "Coffee" }
cost_points = 80
stock = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_reads_unlimited_stock_and_the_defaults(tmp_path):
    text = ENTRY + ENTRY.replace('"coffee"', '"voucher"').replace("10", '"unlimited"')
    coffee, voucher = load_catalog_file(write(tmp_path, text))
    assert coffee == Reward("coffee", {"en": "Coffee"}, 80, 10, True, None)
    assert voucher.stock is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            ENTRY + ENTRY.replace("80", "0"),
            r"rewards\[1\] \('coffee'\): field 'cost_points': "
            r"must be an integer from 1 to 1,000,000,000, got 0",
        ),
        (
            ENTRY + ENTRY,
            r"rewards\[1\] \('coffee'\): field 'reward_id': is already used by rewards\[0\]",
        ),
        (ENTRY + "cost_point = 80\n", r"rewards\[0\] \('coffee'\): field 'cost_point': is not a"),
        (ENTRY.replace("10", '"lots"'), r"field 'stock': must be an integer >= 0 or \"unlimited\""),
        (ENTRY.replace("stock = 10", ""), r"field 'stock': is required"),
        (ENTRY.replace("stock = 10", "stock = 1\nactive = 1"), r"field 'active'"),
        (ENTRY.replace("en =", "es ="), r"field 'name': must have an 'en' entry"),
        (ENTRY.replace('"coffee"', '""'), r"rewards\[0\]: field 'reward_id'"),
        ('version = "1"\n' + ENTRY, r"field 'version': is not a known field"),
        ("", r"field 'rewards': is required"),
        ("rewards = 3", r"field 'rewards': is required"),
        ("rewards = [3]", r"rewards\[0\]: must be a table"),
        ("[[rewards]\n", r"is not valid TOML"),
    ],
)
def test_an_invalid_file_names_the_file_the_entry_and_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(CatalogError, match=message) as raised:
        load_catalog_file(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_a_missing_file_is_a_catalog_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog_file(tmp_path / "nothing.toml")


def test_loading_an_invalid_file_exits_2_and_publishes_nothing(tmp_path, monkeypatch, capsys):
    # No broker listens there: the command must fail before it connects to one.
    monkeypatch.setenv("LOYALTY_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    path = write(tmp_path, ENTRY.replace("80", "-1"))
    assert main(["catalog", "load", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("loyalty catalog load: ")
    assert "field 'cost_points'" in error


# --- the view ---------------------------------------------------------------------------------


def view_of(*rewards: Reward) -> CatalogView:
    view = CatalogView()
    for reward in rewards:
        assert view.apply_catalog(reward.reward_id.encode(), encode_reward(reward)) is None
    return view


def stock(reserved: int) -> bytes:
    return encode_stock(RewardStock(reserved, {"r-1": [reserved, "reserved"]}))


def test_the_view_lists_every_reward_by_id_with_its_live_stock():
    view = view_of(COFFEE, VOUCHER, WASH, Reward("old", {"en": "Old"}, 5, 0, active=False))
    assert view.apply_stock(b"coffee", stock(4)) is None
    assert view.apply_stock(b"fuel-voucher", stock(1000)) is None
    listing = view.listing()
    assert [entry["reward_id"] for entry in listing] == [
        "car-wash",
        "coffee",
        "fuel-voucher",
        "old",
    ]
    assert listing[1] == {
        "reward_id": "coffee",
        "name": "Coffee",
        "cost_points": 80,
        "stock": 10,
        "remaining": 6,
        "active": True,
        "per_member_limit": None,
    }
    assert [entry["remaining"] for entry in listing] == [3, 6, None, 0]
    assert [entry["name"] for entry in view.listing("es")][:2] == ["Car wash", "Café"]
    assert view.get("coffee") == COFFEE
    conforms(listing, "Catalog")


def test_the_latest_record_of_a_reward_wins_and_a_tombstone_removes_it():
    view = view_of(COFFEE)
    view.apply_catalog(b"coffee", encode_reward(Reward("coffee", {"en": "Espresso"}, 90, 10)))
    assert view.get("coffee") == Reward("coffee", {"en": "Espresso"}, 90, 10)
    assert view.apply_catalog(b"coffee", None) is None
    assert view.get("coffee") is None
    assert view.listing() == []
    assert view.apply_catalog(b"never-published", None) is None


def test_stock_records_replace_each_other_and_a_tombstone_frees_everything():
    view = view_of(COFFEE)
    for reserved, remaining in [(2, 8), (7, 3), (1, 9)]:
        view.apply_stock(b"coffee", stock(reserved))
        assert view.remaining("coffee") == remaining
    view.apply_stock(b"coffee", None)
    assert (view.reserved("coffee"), view.remaining("coffee")) == (0, 10)


def test_remaining_is_never_below_zero():
    view = view_of(WASH)  # stock 3
    view.apply_stock(b"car-wash", stock(5))  # the catalog's stock was lowered afterwards
    assert view.remaining("car-wash") == 0
    assert view.listing()[0]["remaining"] == 0


def test_stock_of_a_reward_not_published_yet_is_kept_for_it():
    view = CatalogView()
    view.apply_stock(b"coffee", stock(4))
    assert view.remaining("coffee") == 0  # not in the catalog: nothing to redeem
    view.apply_catalog(b"coffee", encode_reward(COFFEE))
    assert view.remaining("coffee") == 6


def test_unlimited_stock_stays_unlimited_whatever_is_reserved():
    view = view_of(VOUCHER)
    view.apply_stock(b"fuel-voucher", stock(10**6))
    assert view.remaining("fuel-voucher") is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"coffee", b"not json"),
        (b"coffee", record(cost_points=0)),
        (b"tea", record()),  # keyed by another reward
        (None, record()),
        (b"\xff", record()),
    ],
)
def test_a_bad_catalog_record_is_skipped_and_counted(key, value):
    view = view_of(COFFEE)
    reason = view.apply_catalog(key, value)
    assert reason
    assert view.skipped == 1
    assert view.get("coffee") == COFFEE


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"coffee", b"{"),
        (b"coffee", b"[]"),
        (b"coffee", b'{"requests": {}}'),
        (b"coffee", b'{"reserved": -1, "requests": {}}'),
        (b"coffee", b'{"reserved": "2", "requests": {}}'),
        (None, stock(1)),
    ],
)
def test_a_bad_stock_record_is_skipped_and_counted(key, value):
    view = view_of(COFFEE)
    view.apply_stock(b"coffee", stock(3))
    assert view.apply_stock(key, value)
    assert view.skipped == 1
    assert view.remaining("coffee") == 7


# --- GET /catalog -----------------------------------------------------------------------------


def test_the_catalog_is_503_with_retry_after_until_the_view_is_ready():
    view = view_of(COFFEE)
    answer = catalog_answer(view, None)
    assert (answer.status, answer.body["error"]) == (503, "catalog_loading")
    assert answer.headers == {"Retry-After": str(RETRY_AFTER_S)}
    conforms(answer.body, "Error")
    view.ready = True
    answer = catalog_answer(view, "es")
    assert answer.status == 200
    assert answer.body == view.listing("es")
    conforms(answer.body, "Catalog")


def test_the_catalog_schema_names_every_field_of_the_listing():
    listed = view_of(COFFEE).listing()[0]
    schema = OPENAPI_DOCUMENT["components"]["schemas"]["CatalogReward"]
    assert set(listed) == set(schema["properties"])


# --- GET /members/{id}/redemptions -----------------------------------------------------------


def redemption(reward_id: str, status: str, requested_at: str, **fields: Any) -> Redemption:
    values: dict[str, Any] = {
        "reward_id": reward_id,
        "quantity": 1,
        "points": 80,
        "status": status,
        "reason": None,
        "station_id": "st-1",
        "requested_at": requested_at,
        "updated_at": requested_at,
    }
    values.update(fields)
    return Redemption(**values)


MEMBER_WITH_REDEMPTIONS = MemberState(
    enrolled_at="2026-10-01T08:00:00+00:00",
    redemptions={
        "r-2": redemption("coffee", "confirmed", "2026-11-02T09:00:00+01:00"),
        "r-1": redemption("car-wash", "fulfilled", "2026-11-01T09:00:00Z", points=450),
        "r-3": redemption(
            "coffee",
            "rejected",
            "2026-11-02T08:30:00Z",  # 09:30 in Madrid: after r-2
            quantity=2,
            points=160,
            reason="insufficient_points",
        ),
    },
)


def test_redemptions_are_listed_newest_request_first():
    listed = member_redemptions(MEMBER_WITH_REDEMPTIONS)
    assert [entry["request_id"] for entry in listed] == ["r-3", "r-2", "r-1"]
    assert listed[0] == {
        "request_id": "r-3",
        "reward_id": "coffee",
        "quantity": 2,
        "points": 160,
        "status": "rejected",
        "reason": "insufficient_points",
        "station_id": "st-1",
        "requested_at": "2026-11-02T08:30:00Z",
        "updated_at": "2026-11-02T08:30:00Z",
    }


def test_redemptions_answer_of_a_member_on_record():
    answer = redemptions_answer(MEMBER, encode_state(MEMBER_WITH_REDEMPTIONS))
    assert answer.status == 200
    assert answer.body["member_id"] == MEMBER
    assert len(answer.body["redemptions"]) == 3
    conforms(answer.body, "Redemptions")
    schema = OPENAPI_DOCUMENT["components"]["schemas"]["Redemption"]
    assert set(answer.body["redemptions"][0]) == set(schema["properties"])
    enrolled = redemptions_answer(MEMBER, encode_state(MemberState(enrolled_at="2026-10-01")))
    assert (enrolled.status, enrolled.body["redemptions"]) == (200, [])


def test_redemptions_of_an_unknown_member_are_404():
    for value in (None, encode_state(MemberState())):
        answer = redemptions_answer("nobody", value)
        assert (answer.status, answer.body["error"]) == (404, "unknown_member")
        conforms(answer.body, "Error")


# --- the OpenAPI document ---------------------------------------------------------------------


def test_the_document_with_the_catalog_and_redemptions_is_valid_openapi_3_1():
    schema = schemathesis.openapi.from_dict(copy.deepcopy(OPENAPI_DOCUMENT))
    schema.validate()
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert {"GET /catalog", "GET /members/{member_id}/redemptions"} <= operations
    paths = OPENAPI_DOCUMENT["paths"]
    assert set(paths["/members/{member_id}/redemptions"]["get"]["responses"]) == {
        "200",
        "400",
        "404",
        "503",
    }
    assert set(paths["/catalog"]["get"]["responses"]) == {"200", "503"}
