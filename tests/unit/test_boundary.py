"""No record may stop the service, without Kafka: the pure checks of the internal topics,
the account and redemption processors driven with plain messages (one failure boundary per
record, a failed record leaves nothing in the batch), dead letters cut to the producer
limit, and the catalog feed skipping a record it cannot apply."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

import loyalty.agents.batching
from loyalty.agents.accounts import PROCESSING_ERROR, AccountProcessor
from loyalty.agents.batching import (
    MAX_RECORD_BYTES,
    OUTPUT_TOO_LARGE,
    STATE_TOO_LARGE,
    Batch,
    check_outputs,
    check_state,
)
from loyalty.agents.catalog import CatalogFeed
from loyalty.agents.deadletters import KEPT_BYTES, KEPT_KEY_BYTES, dead_letter
from loyalty.agents.redemptions import RedemptionProcessor
from loyalty.agents.referrals import ReferralProcessor
from loyalty.core import codes, saga
from loyalty.core.accounts import (
    UNKNOWN_HOLD,
    UNKNOWN_REFERRAL_CLAIM,
    RejectedTransaction,
    apply_member_event,
    apply_redemption_step,
    apply_referral_outcome,
)
from loyalty.core.catalog import CatalogView
from loyalty.schemas import decode
from loyalty.schemas.decode import (
    INVALID_TIMESTAMP,
    INVALID_TYPE,
    INVALID_VALUE,
    MISSING_FIELD,
    OUT_OF_RANGE,
    InvalidEvent,
    decode_member_command,
    decode_referral_op,
    decode_saga_reply,
    decode_stock_command,
)
from loyalty.schemas.events import (
    ACCEPTED,
    FULFILLED,
    REFEREE,
    REFERRER,
    REFERRER_ERASED,
    SELF_REFERRAL,
    SIGNUP,
    UNKNOWN_REFERRAL_CODE,
    RedemptionStep,
    ReferralOutcome,
)
from loyalty.schemas.state import MemberState, Redemption, decode_state, encode_state
from loyalty.streams.partitioning import WRONG_PARTITION, check_placement, owner_partition
from loyalty.streams.settings import Settings, from_env, to_env
from loyalty.streams.topics import MAX_MESSAGE_BYTES
from tests.unit.builders import MEMBER, NOW_MS, PROGRAM, member_event

T0 = datetime(2026, 5, 1, 10, tzinfo=UTC)
PARTITIONS = 4
SETTINGS = Settings(partitions=PARTITIONS)
TOPICS = SETTINGS.topics


# --- the pure checks -------------------------------------------------------------------------


def hold(**overrides: Any) -> dict[str, Any]:
    value = {
        "redemption": saga.HOLD,
        "request_id": "rdm-1",
        "member_id": MEMBER,
        "reward_id": "car-wash",
        "quantity": 1,
        "points": 450,
        "station_id": "st-1",
        "requested_at": T0.isoformat(),
        "occurred_at": T0.isoformat(),
        "per_member_limit": None,
        "reward_name": {"en": "Car wash"},
    }
    value.update(overrides)
    return value


def step(**overrides: Any) -> RedemptionStep:
    command = decode_member_command(orjson.dumps(hold(**overrides)))
    assert isinstance(command, RedemptionStep)
    return command


def rejected(decoder: Any, value: Any) -> str:
    with pytest.raises(InvalidEvent) as raised:
        decoder(value)
    return raised.value.reason


def test_the_decoders_names_are_the_engines() -> None:
    assert decode.MEMBER_STEPS == (saga.HOLD, saga.CONFIRM, saga.REJECT, FULFILLED, saga.CANCEL)
    assert decode.REPLY_STEPS == (saga.HELD, saga.REFUSED, saga.RESERVED, saga.UNAVAILABLE)
    assert decode.STOCK_STEPS == (saga.RESERVE, saga.RETURN)
    assert set(decode.REJECTION_REASONS) == {
        saga.INSUFFICIENT_POINTS,
        saga.OUT_OF_STOCK,
        saga.UNKNOWN_REWARD,
        saga.INACTIVE_REWARD,
        saga.LIMIT_REACHED,
    }
    assert set(decode.REFERRAL_STATUSES) == {
        ACCEPTED,
        SELF_REFERRAL,
        UNKNOWN_REFERRAL_CODE,
        REFERRER_ERASED,
    }


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"points": -1_000_000}, OUT_OF_RANGE),
        ({"points": 0}, OUT_OF_RANGE),
        ({"points": 10**15 + 1}, OUT_OF_RANGE),
        ({"points": 1e30}, INVALID_TYPE),
        ({"points": 4.5}, INVALID_TYPE),
        ({"points": True}, INVALID_TYPE),
        ({"points": "450"}, INVALID_TYPE),
        ({"quantity": -1000}, OUT_OF_RANGE),
        ({"quantity": 0}, OUT_OF_RANGE),
        ({"quantity": 101}, OUT_OF_RANGE),
        ({"redemption": "mint"}, INVALID_VALUE),
        ({"redemption": None}, MISSING_FIELD),
        ({"request_id": ""}, OUT_OF_RANGE),
        ({"request_id": 7}, INVALID_TYPE),
        ({"member_id": "m" * 65}, OUT_OF_RANGE),
        ({"station_id": "s" * 1000}, OUT_OF_RANGE),
        ({"station_id": "s" * 50_000}, "too_large"),
        ({"reward_id": None}, MISSING_FIELD),
        ({"requested_at": "yesterday"}, INVALID_TIMESTAMP),
        ({"occurred_at": 1_700_000_000}, INVALID_TYPE),
        ({"redemption": saga.REJECT, "reason": "because"}, INVALID_VALUE),
        ({"per_member_limit": 0}, OUT_OF_RANGE),
        ({"reward_name": ["Car wash"]}, INVALID_TYPE),
    ],
)
def test_a_forged_or_corrupt_redemption_step_is_refused_by_the_decoder(overrides, reason):
    assert rejected(decode_member_command, orjson.dumps(hold(**overrides))) == reason


def test_a_reject_of_an_unknown_reward_may_carry_no_points() -> None:
    command = step(redemption=saga.REJECT, points=0, reason=saga.UNKNOWN_REWARD)
    assert command.points == 0 and command.reason == saga.UNKNOWN_REWARD


def outcome(**overrides: Any) -> dict[str, Any]:
    value = {
        "member_id": MEMBER,
        "role": REFEREE,
        "signup_event_id": "signup-1",
        "code": "ABCD2345",
        "status": ACCEPTED,
        "occurred_at": T0.isoformat(),
    }
    value.update(overrides)
    return value


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"role": "admin"}, INVALID_VALUE),
        ({"status": "granted"}, INVALID_VALUE),
        ({"code": 12345678}, INVALID_TYPE),
        ({"code": "X" * 300}, OUT_OF_RANGE),
        ({"signup_event_id": None}, MISSING_FIELD),
        ({"occurred_at": "2026-05-01T10:00:00"}, "naive_timestamp"),
    ],
)
def test_a_malformed_referral_outcome_is_refused_by_the_decoder(overrides, reason):
    assert rejected(decode_member_command, orjson.dumps(outcome(**overrides))) == reason


def member_with(points: int) -> MemberState:
    return MemberState(balance=points, enrolled_at=T0.isoformat(), lots={739000: points})


def refused(state: MemberState, command: RedemptionStep | ReferralOutcome) -> str:
    with pytest.raises(RejectedTransaction) as raised:
        if isinstance(command, RedemptionStep):
            apply_redemption_step(state, command, PROGRAM, NOW_MS)
        else:
            apply_referral_outcome(state, command, PROGRAM, NOW_MS)
    return raised.value.reason


@pytest.mark.parametrize("kind", [saga.CONFIRM, saga.CANCEL, FULFILLED, saga.REJECT])
def test_a_step_without_a_hold_is_refused(kind: str) -> None:
    reason = saga.OUT_OF_STOCK if kind == saga.REJECT else None
    assert refused(member_with(1000), step(redemption=kind, reason=reason)) == UNKNOWN_HOLD


def test_a_confirm_or_cancel_that_differs_from_the_hold_is_refused() -> None:
    held, _ = apply_redemption_step(member_with(1000), step(), PROGRAM, NOW_MS)
    assert held.redemptions["rdm-1"].status == saga.HELD
    for different in ({"points": 1}, {"quantity": 2}, {"reward_id": "coffee"}):
        assert refused(held, step(redemption=saga.CONFIRM, **different)) == UNKNOWN_HOLD
    confirmed, outcome_ = apply_redemption_step(
        held, step(redemption=saga.CONFIRM), PROGRAM, NOW_MS
    )
    assert confirmed.balance == 550 and outcome_.applied.entries == (("redemption", -450),)
    # a forged cancel for more points than were spent mints nothing
    assert refused(confirmed, step(redemption=saga.CANCEL, points=1_000_000)) == UNKNOWN_HOLD
    cancelled, _ = apply_redemption_step(confirmed, step(redemption=saga.CANCEL), PROGRAM, NOW_MS)
    assert cancelled.balance == 1000


def test_the_coordinators_rejection_of_an_unknown_or_inactive_reward_needs_no_hold() -> None:
    for reason, points in ((saga.UNKNOWN_REWARD, 0), (saga.INACTIVE_REWARD, 450)):
        command = step(redemption=saga.REJECT, points=points, reason=reason)
        state, _ = apply_redemption_step(member_with(100), command, PROGRAM, NOW_MS)
        assert state.redemptions["rdm-1"].status == saga.REJECTED
        assert state.balance == 100


def test_a_repeated_step_on_a_matching_record_changes_nothing() -> None:
    record = Redemption("car-wash", 1, 450, saga.CONFIRMED, None, "st-1", T0.isoformat(), "x")
    state = replace(member_with(550), redemptions={"rdm-1": record})
    again, _ = apply_redemption_step(state, step(redemption=saga.CONFIRM), PROGRAM, NOW_MS)
    assert again.balance == 550


def referral(**overrides: Any) -> ReferralOutcome:
    command = decode_member_command(orjson.dumps(outcome(**overrides)))
    assert isinstance(command, ReferralOutcome)
    return command


def signed_up_with(code: str) -> MemberState:
    event = member_event("signup-1", SIGNUP, T0, referral_code=code)
    state, _ = apply_member_event(MemberState(), event, PROGRAM, NOW_MS)
    return state


def test_a_referee_outcome_must_answer_the_members_own_claim() -> None:
    code = "abcd-2345"  # as typed; the claim and its answer carry it normalised
    state = signed_up_with(code)
    assert state.referral_claim == ("signup-1", codes.normalize(code))
    assert decode_state(encode_state(state)).referral_claim == state.referral_claim
    # no claim at all, another signup, another code
    assert refused(MemberState(), referral()) == UNKNOWN_REFERRAL_CLAIM
    assert refused(state, referral(signup_event_id="signup-2")) == UNKNOWN_REFERRAL_CLAIM
    assert refused(state, referral(code="ZZZZ9999")) == UNKNOWN_REFERRAL_CLAIM
    credited, _ = apply_referral_outcome(state, referral(), PROGRAM, NOW_MS)
    assert credited.balance == state.balance + PROGRAM.referee_points


def test_a_referee_claim_stored_before_claims_were_recorded_is_found_in_its_signup() -> None:
    state = replace(signed_up_with("ABCD2345"), referral_claim=None)
    assert "rc" not in orjson.loads(encode_state(state))
    credited, _ = apply_referral_outcome(state, referral(), PROGRAM, NOW_MS)
    assert credited.balance == state.balance + PROGRAM.referee_points


def test_a_referrer_outcome_must_name_the_members_own_code() -> None:
    own = codes.referral_code(MEMBER)
    state = replace(member_with(0), referral_code=own)
    assert refused(state, referral(role=REFERRER, code="ABCD2345")) == UNKNOWN_REFERRAL_CLAIM
    assert refused(MemberState(), referral(role=REFERRER, code=own)) == UNKNOWN_REFERRAL_CLAIM
    credited, _ = apply_referral_outcome(state, referral(role=REFERRER, code=own), PROGRAM, NOW_MS)
    assert credited.balance == PROGRAM.referrer_points


def stock_command(**overrides: Any) -> bytes:
    value = {
        "stock": saga.RESERVE,
        "request_id": "rdm-1",
        "reward_id": "car-wash",
        "quantity": 1,
        "occurred_at": T0.isoformat(),
    }
    value.update(overrides)
    return orjson.dumps(value)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"quantity": -1000}, OUT_OF_RANGE),
        ({"quantity": 0}, OUT_OF_RANGE),
        ({"quantity": 101}, OUT_OF_RANGE),
        ({"quantity": 1.5}, INVALID_TYPE),
        ({"stock": "steal"}, INVALID_VALUE),
        ({"reward_id": None}, MISSING_FIELD),
        ({"occurred_at": "now"}, INVALID_TIMESTAMP),
    ],
)
def test_a_stock_command_out_of_bounds_is_refused(overrides, reason):
    assert rejected(decode_stock_command, stock_command(**overrides)) == reason


def test_a_valid_stock_command_decodes_to_what_the_saga_reads() -> None:
    assert decode_stock_command(stock_command(quantity=100)) == orjson.loads(
        stock_command(quantity=100)
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"step": "confirmed", "request_id": "r", "occurred_at": T0.isoformat()}, INVALID_VALUE),
        ({"step": saga.REFUSED, "request_id": "r", "occurred_at": T0.isoformat()}, MISSING_FIELD),
        (
            {
                "step": "unavailable",
                "request_id": "r",
                "occurred_at": "x",
                "reason": "out_of_stock",
            },
            INVALID_TIMESTAMP,
        ),
        ({"step": saga.HELD, "request_id": ["r"], "occurred_at": T0.isoformat()}, INVALID_TYPE),
    ],
)
def test_a_malformed_reply_to_the_coordinator_is_refused(value, reason):
    assert rejected(decode_saga_reply, value) == reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[]", "not_an_object"),
        (orjson.dumps({"op": "steal", "code": "ABCD2345"}), INVALID_VALUE),
        (orjson.dumps({"op": "register", "code": "ABCD2345"}), MISSING_FIELD),
        (orjson.dumps({"op": "claim", "code": "ABCD2345", "member_id": "m"}), MISSING_FIELD),
        (orjson.dumps({"op": "erase", "code": ""}), INVALID_TYPE),
    ],
)
def test_a_malformed_referral_registry_message_is_refused(value, reason):
    assert rejected(decode_referral_op, value) == reason


def test_a_record_of_an_internal_topic_must_sit_on_its_keys_partition() -> None:
    key = b"member-42"
    owner = owner_partition(key, PARTITIONS)
    assert check_placement(key, "member-42", owner, PARTITIONS) == key
    for wrong_key, partition in (
        (key, (owner + 1) % PARTITIONS),
        (b"member-43", owner),
        (None, owner),
        (b"x" * 3_500_000, owner),
    ):
        with pytest.raises(InvalidEvent) as raised:
            check_placement(wrong_key, "member-42", partition, PARTITIONS)
        assert raised.value.reason == WRONG_PARTITION
        assert len(raised.value.message) < 200


def test_size_checks() -> None:
    assert check_state(b"x" * 10, 10) == b"x" * 10
    with pytest.raises(loyalty.agents.batching.Unstorable) as raised:
        check_state(b"x" * 11, 10)
    assert raised.value.reason == STATE_TOO_LARGE
    fits = ("t", b"k", b"v" * MAX_RECORD_BYTES, None)
    assert check_outputs([fits]) == [fits]
    with pytest.raises(loyalty.agents.batching.Unstorable) as raised:
        check_outputs([fits, ("t", b"k", fits[2] + b"v", None)])
    assert raised.value.reason == OUTPUT_TOO_LARGE
    assert MAX_RECORD_BYTES < MAX_MESSAGE_BYTES


def test_max_state_bytes_is_read_from_the_environment() -> None:
    assert Settings().max_state_bytes == 262144
    settings = from_env({"LOYALTY_MAX_STATE_BYTES": "1000"})
    assert settings.max_state_bytes == 1000
    assert from_env(to_env(settings)) == settings


# --- dead letters never exceed the producer limit -------------------------------------------


def message(
    topic: str, key: bytes | None, value: bytes | None, partition: int = 0, offset: int = 0
) -> SimpleNamespace:
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, key=key, value=value, timestamp=1.7e9
    )


def test_a_huge_record_is_cut_with_its_size_and_sha256() -> None:
    key = b"k" * 3_500_000
    value = bytes(range(256)) * 20_000  # 5,120,000 bytes
    batch = Batch()
    batch.dead_letter("dlq", message(TOPICS.transactions, key, value), "invalid_json", "x", NOW_MS)
    [(topic, dlq_key, record, _)] = batch.unordered
    assert topic == "dlq" and dlq_key == key[:KEPT_KEY_BYTES]
    assert len(record) + len(dlq_key) <= MAX_MESSAGE_BYTES - 16 * 1024
    letter = orjson.loads(record)
    kept_key = base64.b64decode(letter["key_b64"])
    kept_value = base64.b64decode(letter["value_b64"])
    assert letter["truncated"] is True
    assert kept_key == key[: len(kept_key)] and len(kept_key) == KEPT_KEY_BYTES
    assert kept_value == value[: len(kept_value)] and len(kept_key) + len(kept_value) == KEPT_BYTES
    assert (letter["key_size"], letter["value_size"]) == (3_500_000, 5_120_000)
    assert letter["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()


def test_a_long_error_text_is_cut() -> None:
    letter = dead_letter(message("t", b"k", b"v"), PROCESSING_ERROR, "\x00" * 100_000, NOW_MS)
    assert len(orjson.dumps(letter)) < 8000


def test_a_small_record_is_kept_whole_and_a_redacted_one_not_at_all() -> None:
    one_megabyte = b"v" * 1_000_000
    letter = dead_letter(message("t", b"key", one_megabyte), "too_large", "big", NOW_MS)
    assert letter.truncated is False
    assert base64.b64decode(letter.value_b64 or "") == one_megabyte
    assert letter.key_size == 3 and letter.value_sha256 == hashlib.sha256(one_megabyte).hexdigest()
    redacted = dead_letter(message("t", b"key", b"pii"), "member_erased", "x", NOW_MS, redact=True)
    assert (redacted.key_b64, redacted.value_b64, redacted.key_size, redacted.value_sha256) == (
        None,
        None,
        None,
        None,
    )
    empty = dead_letter(message("t", None, None), "invalid_json", "x", NOW_MS)
    assert (empty.key_size, empty.value_size, empty.truncated) == (None, None, False)


# --- the account agent: one failure boundary per record -------------------------------------


class Store:
    offset_key = b"__offset"

    def __init__(self) -> None:
        self.partitions: dict[int, dict[bytes, bytes]] = {}

    def _db_for_partition(self, partition: int) -> dict[bytes, bytes]:
        return self.partitions.setdefault(partition, {})


def table(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, data=Store())


class CapturingCommitter:
    """Keeps the batches it is asked to commit, and applies their state changes."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables
        self.batches: list[Batch] = []

    async def commit_all(self, batch: Batch) -> None:
        await self.commit(batch)

    async def commit(self, batch: Batch) -> list[Any]:
        self.batches.append(batch)
        for (name, partition), changes in batch.changes.items():
            db = self.tables[name].data._db_for_partition(partition)
            for key, value in changes.items():
                assert value is None or isinstance(value, bytes)  # nothing left to encode
                if value is None:
                    db.pop(key, None)
                else:
                    db[key] = value
        return []


def account_processor(settings: Settings = SETTINGS) -> AccountProcessor:
    tables = SimpleNamespace(
        member_to_state=table("member_to_state"), erased_members=table("erased_members")
    )
    processor = AccountProcessor(settings, PROGRAM, SimpleNamespace(), tables, lambda: NOW_MS)
    processor.committer = CapturingCommitter(processor.tables)  # type: ignore[assignment]
    return processor


def sale_value(tx_id: str, member: str = MEMBER, **overrides: Any) -> bytes:
    value = {
        "transaction_id": tx_id,
        "member_id": member,
        "station_id": "st-1",
        "occurred_at": (T0 + timedelta(minutes=int(tx_id.rsplit("-", 1)[-1]))).isoformat(),
        "fuel_type": "diesel",
        "liters": 30,
        "amount": 49.5,
    }
    value.update(overrides)
    return orjson.dumps(value)


def on_owner(topic: str, key: bytes, value: bytes, offset: int = 0) -> SimpleNamespace:
    return message(topic, key, value, owner_partition(key, PARTITIONS), offset)


def run(processor: Any, *messages: SimpleNamespace) -> Batch:
    asyncio.run(processor.process(list(messages)))
    batch: Batch = processor.committer.batches[-1]
    return batch


def letters(batch: Batch) -> list[dict[str, Any]]:
    return [
        orjson.loads(value) for topic, _, value, _ in batch.unordered if topic == TOPICS.deadletter
    ]


def stored(processor: AccountProcessor, member: str = MEMBER) -> MemberState:
    key = member.encode()
    db = processor.tables[processor.members].data._db_for_partition(
        owner_partition(key, PARTITIONS)
    )
    return decode_state(db.get(key))


def test_a_failed_record_leaves_nothing_in_the_batch_and_its_neighbours_apply(
    monkeypatch,
) -> None:
    def encode_unless_poisoned(state: MemberState) -> bytes:
        # What a 1e18 amount did before amounts were bounded: the state's 64-bit integers
        # overflowed when it was encoded, at commit time, for the whole batch.
        if "t-2" in state.applied:
            raise TypeError("Integer exceeds 64-bit range")
        return encode_state(state)

    monkeypatch.setattr("loyalty.agents.accounts.encode_state", encode_unless_poisoned)
    processor = account_processor()
    key = MEMBER.encode()
    good = [on_owner(TOPICS.transactions, key, sale_value(f"t-{n}"), n) for n in (1, 3)]
    poison = on_owner(TOPICS.transactions, key, sale_value("t-2"), 2)
    batch = run(processor, good[0], poison, good[1])

    [letter] = letters(batch)
    assert letter["offset"] == 2
    assert (letter["reason"], letter["message"]) == (
        PROCESSING_ERROR,
        "TypeError: Integer exceeds 64-bit range",
    )
    rewards = [orjson.loads(v) for t, _, v, _ in batch.outputs if t == TOPICS.rewards]
    assert [reward["source_event_id"] for reward in rewards] == ["t-1", "t-3"]
    state = stored(processor)
    assert set(state.applied) == {"t-1", "t-3"}
    assert state.balance == rewards[-1]["balance_after"]
    assert batch.states[key] == state
    assert batch.counts == {
        (TOPICS.transactions, "processed"): 2,
        (TOPICS.transactions, "deadlettered"): 1,
    }
    assert sum(batch.ledger.values()) == len(
        [t for t, _, _, _ in batch.outputs if t == TOPICS.ledger]
    )


def test_a_record_that_would_make_the_state_too_large_is_dead_lettered() -> None:
    probe = account_processor()
    key = MEMBER.encode()
    first = on_owner(TOPICS.transactions, key, sale_value("t-1"), 1)
    run(probe, first)
    limit = len(encode_state(stored(probe))) + 10
    processor = account_processor(replace(SETTINGS, max_state_bytes=limit))
    second = on_owner(TOPICS.transactions, key, sale_value("t-2"), 2)
    batch = run(processor, first, second)
    assert [letter["reason"] for letter in letters(batch)] == [STATE_TOO_LARGE]
    assert set(stored(processor).applied) == {"t-1"}
    sources = [orjson.loads(v).get("source_event_id") for t, _, v, _ in batch.outputs]
    assert "t-2" not in sources


def test_an_output_above_the_producer_limit_is_dead_lettered(monkeypatch) -> None:
    monkeypatch.setattr(loyalty.agents.batching, "MAX_RECORD_BYTES", 300)
    processor = account_processor()
    batch = run(processor, on_owner(TOPICS.transactions, MEMBER.encode(), sale_value("t-1")))
    assert [letter["reason"] for letter in letters(batch)] == [OUTPUT_TOO_LARGE]
    assert batch.outputs == [] and batch.changes == {} and batch.states == {}


def test_a_misplaced_or_miskeyed_rekeyed_transaction_creates_no_account() -> None:
    processor = account_processor()
    key = b"phantom"
    owner = owner_partition(key, PARTITIONS)
    value = sale_value("t-1", member="phantom")
    batch = run(
        processor,
        message(TOPICS.rekeyed, key, value, (owner + 1) % PARTITIONS, 1),
        message(TOPICS.rekeyed, b"someone-else", value, owner, 2),
    )
    assert [letter["reason"] for letter in letters(batch)] == [WRONG_PARTITION] * 2
    assert batch.changes == {} and batch.outputs == []


def test_forged_member_commands_mint_nothing() -> None:
    processor = account_processor()
    key = MEMBER.encode()
    run(processor, on_owner(TOPICS.transactions, key, sale_value("t-1")))
    before = stored(processor)
    commands = TOPICS.member_commands
    batch = run(
        processor,
        on_owner(commands, key, orjson.dumps(hold(points=-1_000_000)), 1),
        on_owner(commands, key, orjson.dumps(hold(redemption=saga.CONFIRM)), 2),
        on_owner(commands, key, orjson.dumps(outcome()), 3),
        on_owner(commands, key, orjson.dumps(outcome(role=REFERRER)), 4),
        message(commands, key, orjson.dumps(hold()), (owner_partition(key, PARTITIONS) + 1) % 4, 5),
    )
    assert [letter["reason"] for letter in letters(batch)] == [
        OUT_OF_RANGE,
        UNKNOWN_HOLD,
        UNKNOWN_REFERRAL_CLAIM,
        UNKNOWN_REFERRAL_CLAIM,
        WRONG_PARTITION,
    ]
    assert batch.changes == {} and batch.outputs == []
    assert stored(processor) == before


def test_a_daily_job_member_that_fails_is_dead_lettered_once_and_the_others_are_done() -> None:
    processor = account_processor()
    keys = [f"m-{n}".encode() for n in range(20)]
    run(
        processor,
        *(on_owner(TOPICS.transactions, k, sale_value("t-1", member=k.decode())) for k in keys),
    )
    partition = owner_partition(keys[0], PARTITIONS)
    db = processor.tables[processor.members].data._db_for_partition(partition)
    db[b"corrupt"] = b"not a state"
    members = [k for k in db if k != b"corrupt"]
    daily = message(
        TOPICS.daily, b"daily", b'{"command":"daily","date":"2026-05-02"}', partition, 9
    )
    batch = run(processor, daily)
    [letter] = letters(batch)
    assert letter["reason"] == PROCESSING_ERROR and "1 member(s)" in letter["message"]
    for key in members:
        assert decode_state(db[key]).last_daily == "2026-05-02"


# --- the redemption agent --------------------------------------------------------------------


def redemption_processor() -> RedemptionProcessor:
    tables = SimpleNamespace(
        redemption_requests=table("redemption_requests"), reward_stock=table("reward_stock")
    )
    catalog = {"car-wash": SimpleNamespace(cost_points=450, stock=40, active=True)}
    processor = RedemptionProcessor(SETTINGS, SimpleNamespace(), tables, catalog)  # type: ignore[arg-type]
    processor.committer = CapturingCommitter(  # type: ignore[assignment]
        {"redemption_requests": tables.redemption_requests, "reward_stock": tables.reward_stock}
    )
    return processor


def test_a_negative_reservation_oversells_nothing() -> None:
    processor = redemption_processor()
    key = b"car-wash"
    topic = TOPICS.stock_commands
    batch = run(
        processor,
        on_owner(topic, key, stock_command(request_id="forged", quantity=-1000), 1),
        on_owner(topic, key, stock_command(quantity=40), 2),
        message(topic, key, stock_command(request_id="r2"), (owner_partition(key, 4) + 1) % 4, 3),
    )
    assert [letter["reason"] for letter in letters(batch)] == [OUT_OF_RANGE, WRONG_PARTITION]
    [changes] = batch.changes.values()
    assert orjson.loads(changes[key])["reserved"] == 40
    [(_, _, reply, _)] = batch.outputs
    assert orjson.loads(reply)["step"] == saga.RESERVED


def test_a_forged_reply_for_no_request_and_a_malformed_one_are_dead_lettered() -> None:
    processor = redemption_processor()
    topic = TOPICS.redemption_steps
    key = b"rdm-1"
    reply = {"step": saga.RESERVED, "request_id": "rdm-1", "occurred_at": T0.isoformat()}
    batch = run(
        processor,
        on_owner(topic, key, orjson.dumps(reply), 1),
        on_owner(topic, key, orjson.dumps({**reply, "step": "confirmed"}), 2),
        on_owner(topic, b"rdm-2", orjson.dumps(reply), 3),
    )
    assert [letter["reason"] for letter in letters(batch)] == [
        saga.UNKNOWN_REQUEST,
        INVALID_VALUE,
        WRONG_PARTITION,
    ]
    assert batch.changes == {} and batch.outputs == []


# --- the referral agent and the catalog feed -------------------------------------------------


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, key: bytes | None, value: bytes, **_: Any) -> None:
        self.sent.append((key, value))


def test_the_referral_agent_dead_letters_what_it_cannot_trust() -> None:
    topics = SimpleNamespace(deadletter=FakeTopic(), member_commands=FakeTopic())
    registry: dict[bytes, bytes] = {}
    processor = ReferralProcessor(
        SETTINGS,
        topics,  # type: ignore[arg-type]
        SimpleNamespace(referral_code_to_member=registry),  # type: ignore[arg-type]
    )
    code = codes.referral_code("m-1").encode()
    register = orjson.dumps({"op": "register", "code": code.decode(), "member_id": "m-1"})
    squat = orjson.dumps({"op": "register", "code": code.decode(), "member_id": "m-2"})
    wrong = (owner_partition(code, PARTITIONS) + 1) % PARTITIONS

    async def scenario() -> None:
        await processor.process(message(TOPICS.referrals, code, b"not json", 0, 1))
        await processor.process(message(TOPICS.referrals, code, register, wrong, 2))
        await processor.process(on_owner(TOPICS.referrals, code, squat, 3))
        await processor.process(on_owner(TOPICS.referrals, code, register, 4))

    asyncio.run(scenario())
    reasons = [orjson.loads(value)["reason"] for _, value in topics.deadletter.sent]
    assert reasons == ["invalid_json", WRONG_PARTITION, INVALID_VALUE]
    assert registry == {code: b"m-1"}


def test_the_catalog_feed_skips_a_record_it_cannot_apply() -> None:
    view = CatalogView()

    def explode(key: bytes | None, value: bytes | None) -> str | None:
        raise RecursionError("maximum recursion depth exceeded")

    view.apply_catalog = explode  # type: ignore[method-assign]
    feed = CatalogFeed(SETTINGS, view)
    tp = TopicPartition(TOPICS.catalog, 0)
    records = [SimpleNamespace(offset=n, key=b"k", value=b"v") for n in range(3)]
    refused = feed._apply(tp, records)
    assert feed._next_offset[tp] == 3
    assert view.skipped == 3
    # Catalog records the view refuses are handed back, to be dead-lettered.
    assert [record.offset for record, _ in refused] == [0, 1, 2]
    assert all("RecursionError" in why for _, why in refused)
