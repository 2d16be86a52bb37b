from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from loyalty.core.accounts import RejectedTransaction, apply_transaction
from loyalty.core.render import render_transaction
from loyalty.schemas.events import REFUND, Transaction
from loyalty.schemas.state import MemberState, decode_state, encode_state
from tests.unit.builders import NOW_MS, PROGRAM, run, sale

T0 = datetime.fromisoformat("2026-11-01T08:00:00+01:00")


def transaction(tx_id: str, liters: str, days: float = 0, **fields) -> Transaction:
    return sale(tx_id, liters, T0 + timedelta(days=days), **fields)


def apply_all(*transactions: Transaction) -> MemberState:
    return run(MemberState(), *transactions)[0]


def test_first_sale_enrols_and_gives_the_welcome_bonus_once():
    state, first = apply_transaction(MemberState(), transaction("a", "20"), PROGRAM, NOW_MS)
    state, second = apply_transaction(state, transaction("b", "10", days=1), PROGRAM, NOW_MS)
    assert first.applied.entries == (("fuel_points", 40), ("welcome_bonus", 100))
    assert first.applied.enrolled and not second.applied.enrolled
    assert second.applied.entries == (("fuel_points", 10),)
    assert state.balance == 150
    assert state.enrolled_at == T0.isoformat()


def test_duplicate_changes_nothing_and_returns_the_stored_outcome():
    state, first = apply_transaction(MemberState(), transaction("a", "20"), PROGRAM, NOW_MS)
    again, replay = apply_transaction(state, transaction("a", "20"), PROGRAM, NOW_MS + 5000)
    assert again is state
    assert replay.duplicate
    assert replay.applied == first.applied
    assert render_transaction(
        transaction("a", "20"), replay.applied, again, PROGRAM
    ) == render_transaction(transaction("a", "20"), first.applied, state, PROGRAM)


def test_ledger_entries_chain_balances():
    state = apply_all(transaction("a", "20"))
    state, outcome = apply_transaction(state, transaction("b", "16", days=1), PROGRAM, NOW_MS)
    outputs = render_transaction(transaction("b", "16", days=1), outcome.applied, state, PROGRAM)
    assert [(e.delta, e.balance_after) for e in outputs.ledger] == [(32, 172)]
    assert outputs.reward.points == 32
    assert [n.kind for n in outputs.notifications] == ["points_earned"]


def test_refund_reverses_in_proportion_and_only_once():
    state = apply_all(transaction("a", "20"))  # 40 fuel + 100 welcome
    refund = transaction("r", "10", days=1, type=REFUND, original_transaction_id="a")
    state, outcome = apply_transaction(state, refund, PROGRAM, NOW_MS)
    assert outcome.applied.entries == (("refund_reversal", -70),)
    assert state.balance == 70
    again, replay = apply_transaction(state, refund, PROGRAM, NOW_MS)
    assert replay.duplicate and again.balance == 70


def test_refund_of_an_unknown_sale_is_rejected():
    refund = transaction("r", "10", type=REFUND, original_transaction_id="nope")
    with pytest.raises(RejectedTransaction) as error:
        apply_transaction(MemberState(), refund, PROGRAM, NOW_MS)
    assert error.value.reason == "unknown_original_transaction"


def test_transactions_outside_the_window_are_forgotten_and_stale_ones_rejected():
    state = apply_all(
        transaction("a", "20"), transaction("b", "20", days=PROGRAM.refund_window_days + 1)
    )
    assert set(state.applied) == {"b"}
    with pytest.raises(RejectedTransaction) as error:
        apply_transaction(state, transaction("a", "20"), PROGRAM, NOW_MS)
    assert error.value.reason == "stale_transaction"


def test_state_round_trips_through_its_encoding():
    state = apply_all(
        transaction("a", "20.25"),
        transaction("r", "3.5", days=1, type=REFUND, original_transaction_id="a"),
    )
    assert decode_state(encode_state(state)) == state
    assert state.applied["a"].refunded_liters == Decimal("3.5")
