"""The member profile API without a worker: request validation, the answers, the routing
decision, and the OpenAPI document (valid OpenAPI 3.1, and the answers conform to it)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest
import schemathesis

from loyalty.agents.openapi import OPENAPI_DOCUMENT
from loyalty.agents.profiles import (
    RETRY_AFTER_S,
    Answer,
    Forward,
    Ownership,
    ReadLocally,
    forward_base,
    ledger_answer,
    ledger_limit,
    ledger_request,
    malformed_member_id,
    member_target,
    profile_answer,
    relayed_headers,
    route,
    unproven_answer,
)
from loyalty.core.accounts import apply_transaction, remember_ledger
from loyalty.core.profile import MAX_LEDGER_LIMIT, member_profile
from loyalty.core.render import render_transaction
from loyalty.schemas.decode import InvalidEvent, decode_transaction
from loyalty.schemas.state import MemberState, encode_state
from loyalty.streams.peers import PROOF_HEADER, PeerHosts, answer_proof, new_nonce
from tests.unit.builders import MEMBER, NOW_MS, PROGRAM, sale


def member_state(sales: int) -> MemberState:
    """``MEMBER`` after ``sales`` sales, with the recent ledger the agent keeps."""
    state = MemberState()
    for day in range(sales):
        transaction = sale(f"t{day}", "20", datetime(2026, 10, 1 + day, 8, tzinfo=UTC))
        state, outcome = apply_transaction(state, transaction, PROGRAM, NOW_MS)
        outputs = render_transaction(transaction, outcome.applied, state, PROGRAM)
        state = remember_ledger(state, outputs.ledger)
    return state


def conforms(body: Any, schema_name: str) -> None:
    """Validate ``body`` against a schema of the OpenAPI document's components."""
    # The document's own "#/components/..." references resolve against its root.
    schema = {**OPENAPI_DOCUMENT, "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(orjson.loads(orjson.dumps(body)))


def sale_with_member(member_id: str) -> dict:
    return {
        "transaction_id": "t-1",
        "member_id": member_id,
        "station_id": "station-1",
        "occurred_at": "2026-11-02T09:15:00+01:00",
        "fuel_type": "diesel",
        "liters": 30,
        "amount": 49.5,
    }


# --- request validation --------------------------------------------------------------------


@pytest.mark.parametrize("member_id", ["m", "member-00001", "a.b_c:d@e+f", "x" * 64])
def test_member_ids_the_engine_could_hold_are_accepted(member_id):
    assert malformed_member_id(member_id) is None
    # One grammar: what the API answers for is exactly what ingest accepts.
    decode_transaction(orjson.dumps(sale_with_member(member_id)), 65536)


@pytest.mark.parametrize(
    "member_id",
    ["", "x" * 65, "tab\there", "nul\x00", "nbsp\xa0", "a/b", "José", "zw\u200bsp", "rlo\u202e"],
)
def test_malformed_member_ids_are_400(member_id):
    with pytest.raises(InvalidEvent):
        decode_transaction(orjson.dumps(sale_with_member(member_id)), 65536)
    answer = malformed_member_id(member_id)
    assert answer is not None
    assert answer.status == 400
    assert answer.body["error"] == "malformed_member_id"
    conforms(answer.body, "Error")


@pytest.mark.parametrize(
    ("raw", "limit"), [(None, 20), ("1", 1), ("7", 7), ("050", 50), (str(MAX_LEDGER_LIMIT), 50)]
)
def test_ledger_limit_defaults_to_20_and_takes_1_to_50(raw, limit):
    assert ledger_limit(raw) == limit


@pytest.mark.parametrize(
    "raw", ["", "0", "51", "-1", "+5", " 5", "5 ", "1.0", "1e1", "abc", "\u0663", "9" * 5000]
)
def test_other_limits_are_400(raw):
    answer = ledger_limit(raw)
    assert isinstance(answer, Answer)
    assert (answer.status, answer.body["error"]) == (400, "invalid_limit")
    conforms(answer.body, "Error")


def test_a_ledger_request_checks_the_member_id_first():
    assert ledger_request("m-1", "5") == 5
    answer = ledger_request("x" * 65, "0")
    assert isinstance(answer, Answer)
    assert answer.body["error"] == "malformed_member_id"


# --- answers --------------------------------------------------------------------------------


def test_profile_of_a_member_on_record():
    state = member_state(2)
    answer = profile_answer(MEMBER, encode_state(state), PROGRAM, NOW_MS)
    assert answer.status == 200
    assert answer.body == member_profile(MEMBER, state, PROGRAM, NOW_MS)
    assert answer.body["balance"] == 100 + 2 * 40  # welcome, 20 L x2 twice
    conforms(answer.body, "Profile")


def test_unknown_members_are_404():
    for value in (None, encode_state(MemberState())):
        for answer in (
            profile_answer("nobody", value, PROGRAM, NOW_MS),
            ledger_answer("nobody", value, 20),
        ):
            assert answer.status == 404
            assert answer.body["error"] == "unknown_member"
            conforms(answer.body, "Error")


def test_ledger_gives_the_most_recent_entries_first():
    value = encode_state(member_state(2))  # fuel + welcome, then fuel
    answer = ledger_answer(MEMBER, value, 2)
    assert answer.status == 200
    assert answer.body["member_id"] == MEMBER
    assert [entry["balance_after"] for entry in answer.body["entries"]] == [180, 140]
    assert len(ledger_answer(MEMBER, value, 20).body["entries"]) == 3
    conforms(answer.body, "Ledger")


# --- routing --------------------------------------------------------------------------------

SETTLED = Ownership(
    rebalancing=False,
    active=frozenset({0, 2}),
    owner_urls={0: "http://a:1", 1: "http://b:2", 2: "http://a:1", 3: "http://b:2"},
)


def test_the_owner_answers_from_its_table_and_others_forward_to_it():
    assert route(0, SETTLED, forwarded=False) == ReadLocally()
    assert route(1, SETTLED, forwarded=False) == Forward("http://b:2")
    assert route(2, SETTLED, forwarded=True) == ReadLocally()


@pytest.mark.parametrize(
    ("partition", "ownership", "forwarded"),
    [
        (0, Ownership(rebalancing=True, active=frozenset({0}), owner_urls={0: "x"}), False),
        (4, SETTLED, False),  # no worker holds it (yet)
        (1, SETTLED, True),  # forwarded here by a worker that took this one for the owner
        (0, Ownership(rebalancing=False, active=frozenset(), owner_urls={}), False),
    ],
)
def test_a_request_is_503_with_retry_after_while_its_owner_is_unknown(
    partition, ownership, forwarded
):
    answer = route(partition, ownership, forwarded)
    assert isinstance(answer, Answer)
    assert answer.status == 503
    assert answer.body["error"] == "owner_unavailable"
    assert answer.headers == {"Retry-After": str(RETRY_AFTER_S)}
    conforms(answer.body, "Error")


# --- forwarding -----------------------------------------------------------------------------

PEERS = PeerHosts.parse(["127.0.0.1", "localhost"])
TOKEN = "k" * 64


@pytest.mark.parametrize(
    ("member_id", "suffix", "limit", "target"),
    [
        ("member-1", "", None, "/members/member-1"),
        ("a/b", "/ledger", 5, "/members/a%2Fb/ledger?limit=5"),
        ("José ?#&", "/redemptions", None, "/members/Jos%C3%A9%20%3F%23%26/redemptions"),
    ],
)
def test_a_forwarded_request_is_rebuilt_from_the_validated_one(member_id, suffix, limit, target):
    assert member_target(member_id, suffix, limit) == target


def test_a_request_is_forwarded_to_the_owners_scheme_host_and_port_only():
    assert (
        forward_base("http://127.0.0.1:7001/anything?q=", PEERS, TOKEN) == "http://127.0.0.1:7001"
    )


@pytest.mark.parametrize(
    ("owner_url", "token"),
    [
        ("http://127.0.0.1:7001", ""),  # no shared token: forwarding is off
        ("http://10.9.9.9:7001", TOKEN),  # not an allowed peer
        ("gopher://127.0.0.1:70", TOKEN),
    ],
)
def test_without_a_token_or_an_allowed_owner_the_answer_is_503_and_nothing_is_fetched(
    owner_url, token
):
    answer = forward_base(owner_url, PEERS, token)
    assert isinstance(answer, Answer)
    assert (answer.status, answer.body["error"]) == (503, "owner_unavailable")
    assert answer.headers == {"Retry-After": str(RETRY_AFTER_S)}
    conforms(answer.body, "Error")


def test_only_an_answer_with_the_owners_proof_is_relayed():
    nonce = new_nonce()
    body = b'{"member_id":"m","balance":180}'
    headers = {"Loyalty-Owner": "http://127.0.0.1:7001", "Content-Type": "application/json"}
    proof = answer_proof(TOKEN, nonce, 200, relayed_headers(headers), body)
    base = "http://127.0.0.1:7001"
    assert unproven_answer(TOKEN, nonce, base, 200, {**headers, PROOF_HEADER: proof}, body) is None
    forged = b'{"member_id":"m","balance":999999}'
    for status, answer_headers, answer_body in (
        (200, headers, body),  # no proof
        (200, {**headers, PROOF_HEADER: proof}, forged),
        (200, {**headers, PROOF_HEADER: proof, "Retry-After": "1"}, body),
        (302, {**headers, PROOF_HEADER: proof, "Location": "http://x/"}, body),
    ):
        refused = unproven_answer(TOKEN, nonce, base, status, answer_headers, answer_body)
        assert refused is not None
        assert (refused.status, refused.body["error"]) == (503, "owner_unavailable")
        assert refused.headers == {"Retry-After": str(RETRY_AFTER_S)}


# --- the OpenAPI document -------------------------------------------------------------------


def test_the_openapi_document_is_valid_openapi_3_1():
    assert OPENAPI_DOCUMENT["openapi"].startswith("3.1.")
    schema = schemathesis.openapi.from_dict(copy.deepcopy(OPENAPI_DOCUMENT))
    schema.validate()
    operations = sorted(result.ok().label for result in schema.get_all_operations())
    assert operations == [
        "GET /catalog",
        "GET /health/live",
        "GET /health/ready",
        "GET /members/{member_id}",
        "GET /members/{member_id}/ledger",
        "GET /members/{member_id}/redemptions",
        "GET /metrics",
        "GET /openapi.json",
    ]


def test_an_invalid_document_is_refused_by_the_same_check():
    broken = copy.deepcopy(OPENAPI_DOCUMENT)
    del broken["paths"]["/metrics"]["get"]["responses"]["200"]["description"]
    with pytest.raises(Exception, match="description"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_member_operation_documents_its_errors():
    for path in (
        "/members/{member_id}",
        "/members/{member_id}/ledger",
        "/members/{member_id}/redemptions",
    ):
        assert set(OPENAPI_DOCUMENT["paths"][path]["get"]["responses"]) == {
            "200",
            "400",
            "404",
            "503",
        }


def test_the_profile_schema_names_every_field_of_the_view():
    """A field added to the profile view must be described (and one removed, noticed)."""
    schemas = OPENAPI_DOCUMENT["components"]["schemas"]
    profile = member_profile(MEMBER, member_state(1), PROGRAM, NOW_MS)
    assert set(profile) == set(schemas["Profile"]["properties"])
    assert set(profile["stats"]) == set(schemas["Stats"]["properties"])
    assert set(profile["rfm"]) == set(schemas["Rfm"]["properties"])
    ledger = ledger_answer(MEMBER, encode_state(member_state(1)), 1).body["entries"][0]
    assert set(ledger) == set(schemas["LedgerEntry"]["properties"])
