from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from loyalty.core.accounts import apply_transaction
from loyalty.schemas import state as state_module
from loyalty.schemas.events import REFUND
from loyalty.schemas.state import AppliedEvent, AppliedLog, MemberState, decode_state, encode_state
from tests.unit.builders import NOW_MS, PROGRAM, member_event, run, sale

T0 = datetime.fromisoformat("2026-11-01T08:00:00+01:00")
T0_S = int(T0.timestamp())

# A changelog value as the engine wrote it, with a transaction ("old") stored before
# applied events had details: stored values must keep decoding and re-encode unchanged.
STORED = (
    b'{"v":1,"b":251,"e":"2026-11-01T08:00:00+01:00","w":true,'
    b'"t":{"old":[1793520000,1795000000000,141,"20.50",[["fuel_points",41],'
    b'["welcome_bonus",100]],"0",false,null],'
    b'"b":[1793602800,1795000000000,151,"10",[["fuel_points",10]],"0",false,null,'
    b'{"tier":"bronze"}],'
    b'"r":[1793689200,1795000000000,100,"5",[["refund_reversal",-10]],"0",false,"old",{}]},'
    b'"m":{"e-1":[1793516400,1795000000000,0,"0",[],"0",true,null,{}]},'
    b'"p":["es-ES",null,false,null,null],"r":"B5MWBS6S","tier":"bronze",'
    b'"earn":{"739921":141},"mis":{},"c":{},"nl":false,"lots":{"739921":141},'
    b'"by":null,"d":null,"rf":false}'
)


def applied_event(occurred_s: int, liters: str = "10", **fields) -> AppliedEvent:
    return AppliedEvent(
        occurred_s=occurred_s,
        processed_ms=NOW_MS,
        balance_after=10,
        liters=Decimal(liters),
        entries=(("fuel_points", 10),),
        **fields,
    )


def log_of(**events: AppliedEvent) -> AppliedLog:
    log = AppliedLog()
    for event_id, event in events.items():
        log = log.with_event(event_id, event)
    return log


@pytest.fixture
def decoded_ids(monkeypatch):
    """The stored events decoded while the test runs, in order."""
    decoded = []
    decode = state_module._decode_applied

    def counting(item):
        decoded.append(item[0])
        return decode(item)

    monkeypatch.setattr(state_module, "_decode_applied", counting)
    return decoded


def test_a_stored_value_re_encodes_byte_for_byte():
    assert encode_state(decode_state(STORED)) == STORED


def test_decoding_a_state_decodes_no_event_and_a_lookup_only_that_one(decoded_ids):
    state = decode_state(STORED)
    assert decoded_ids == []
    assert "b" in state.applied and "nope" not in state.applied
    assert state.applied.get("nope") is None
    assert set(state.applied) == {"old", "b", "r"} and len(state.applied) == 3
    assert decoded_ids == []
    assert state.applied["b"].details == {"tier": "bronze"}
    assert decoded_ids == [1793602800]


def test_an_event_stored_before_details_decodes_with_empty_details():
    old = decode_state(STORED).applied["old"]
    assert old.details == {}
    assert old.liters == Decimal("20.50")
    assert old.entries == (("fuel_points", 41), ("welcome_bonus", 100))


def test_applying_a_sale_leaves_the_stored_form_of_the_other_events_untouched(decoded_ids):
    state = decode_state(STORED)
    new_state, _ = apply_transaction(
        state, sale("new", "10", T0 + timedelta(days=3)), PROGRAM, NOW_MS
    )
    assert decoded_ids == []  # nothing looked up: a new id, no refund
    stored = orjson.loads(encode_state(new_state))["t"]
    assert list(stored) == ["old", "b", "r", "new"]
    assert {key: stored[key] for key in ("old", "b", "r")} == orjson.loads(STORED)["t"]


def test_a_refund_replaces_its_sale_in_place():
    state = decode_state(STORED)
    refund = sale("r2", "4", T0 + timedelta(days=3), type=REFUND, original_transaction_id="b")
    new_state, _ = apply_transaction(state, refund, PROGRAM, NOW_MS)
    assert list(new_state.applied) == ["old", "b", "r", "r2"]
    assert new_state.applied["b"].refunded_liters == Decimal(4)
    assert new_state.applied["b"] == replace(state.applied["b"], refunded_liters=Decimal(4))
    assert new_state.applied.stored["old"] is state.applied.stored["old"]
    assert state.applied["b"].refunded_liters == 0  # the old log is unchanged


def test_since_drops_older_events_and_keeps_the_order():
    log = log_of(a=applied_event(300), b=applied_event(100), c=applied_event(200))
    assert list(log.since(200)) == ["a", "c"]
    assert log.since(100) is log
    assert list(log) == ["a", "b", "c"]
    assert AppliedLog().since(5) == AppliedLog()


def test_newest_occurred_s_and_the_sales_after_an_instant():
    refund = applied_event(400, "3", refund_of="a")
    log = log_of(a=applied_event(300, "20.5"), b=applied_event(100), r=refund)
    assert log.newest_occurred_s() == 400
    assert AppliedLog().newest_occurred_s() == 0
    assert log.sales_after(100) == [(300, Decimal("20.5"))]
    assert log.sales_after(99) == [(300, Decimal("20.5")), (100, Decimal(10))]


def test_logs_are_equal_by_their_stored_form():
    assert log_of(a=applied_event(1)) == log_of(a=applied_event(1))
    assert log_of(a=applied_event(1)) != log_of(a=applied_event(2))
    assert log_of(a=applied_event(1)) != log_of(b=applied_event(1))
    assert log_of(a=applied_event(1)) == {"a": applied_event(1)}
    assert AppliedLog() == {}


def test_a_state_equals_its_decoded_encoding():
    state, _ = run(
        MemberState(),
        member_event("e-1", "signup", T0, locale="es-ES"),
        sale("a", "20.50", T0 + timedelta(hours=1), coupon_codes=("NOPE",)),
        sale("b", "10", T0 + timedelta(days=1)),
        sale("c", "35.2", T0 + timedelta(days=2)),
        sale("r", "5", T0 + timedelta(days=3), type=REFUND, original_transaction_id="c"),
    )
    assert decode_state(encode_state(state)) == state
    assert encode_state(decode_state(encode_state(state))) == encode_state(state)
