"""No record may stop the worker (issue 18): poison records on input and internal topics,
interleaved with valid sales, on the real broker.

One worker gets a sale whose amount would overflow the stored state's integers, sales with
a 50 KB station_id, a 5 MB value (gzip-compressed, so the broker takes it), a 3.5 MB key
with an invalid value, forged redemption steps and referral outcomes on
``loyalty.member-commands``, a negative stock reservation, a transaction written to
``loyalty.transactions.rekeyed`` on the wrong partition, and a member whose sales grow
their state past ``LOYALTY_MAX_STATE_BYTES``. It must stay up, dead-letter each of them
with its reason (a dead letter always under the producer limit), reward every valid sale
exactly once, and leave balances as the valid sales made them.

The broker takes batches up to ``message.max.bytes`` = 4,194,304 bytes (localkafka/broker.py;
the engine's topics have ``max.message.bytes`` = ``MAX_MESSAGE_BYTES``, the same 4 MiB):
the limit applies to the compressed batch, so a 5 MB value that gzip shrinks gets in, and
its dead letter must be cut to fit.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from kafka import KafkaProducer

from loyalty.demo.worker_process import WorkerProcess
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.topics import MAX_MESSAGE_BYTES
from tests.integration.harness import TopicReader, distinct, isolated_settings

PARTITIONS = 4
MEMBERS = [f"driver-{index:02d}" for index in range(10)]
TARGET = MEMBERS[0]
"""The member the poison records aim at, between its own valid sales."""
START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
HOARDER = "hoarder-1"
HOARDER_SALES = 20
MAX_STATE_BYTES = 4096
"""A member's state takes about 2 KB after 5 sales, and 6 KB after 20 at as many stations:
the hoarder's later sales would store more than this (``state_too_large``)."""


def sale(transaction_id: str, member: str, minute: int, **overrides: Any) -> bytes:
    value: dict[str, Any] = {
        "transaction_id": transaction_id,
        "member_id": member,
        "station_id": "station-7",
        "occurred_at": (START + timedelta(minutes=minute)).isoformat(),
        "fuel_type": "diesel",
        "liters": 30,
        "amount": 49.5,
    }
    value.update(overrides)
    return orjson.dumps(value)


def valid_sales(round_number: int) -> list[tuple[str, bytes]]:
    """One sale of every member (transaction ids ``ok-<round>-<member>``)."""
    return [
        (member, sale(f"ok-{round_number}-{index}", member, round_number * 60 + index))
        for index, member in enumerate(MEMBERS)
    ]


def hold(step: str, points: int) -> bytes:
    return orjson.dumps(
        {
            "redemption": step,
            "request_id": "forged-1",
            "member_id": TARGET,
            "reward_id": "car-wash",
            "quantity": 1,
            "points": points,
            "station_id": "station-7",
            "requested_at": START.isoformat(),
            "occurred_at": START.isoformat(),
        }
    )


def test_poison_records_are_dead_lettered_and_the_worker_goes_on(kafka_bootstrap, tmp_path):
    settings = replace(
        isolated_settings(kafka_bootstrap, tmp_path, partitions=PARTITIONS),
        max_state_bytes=MAX_STATE_BYTES,
    )
    topics = settings.topics
    target_key = TARGET.encode()
    target_partition = owner_partition(target_key, PARTITIONS)
    big_value = sale("huge-value", TARGET, 5, padding="x" * 5_000_000)
    big_key = b"k" * 3_500_000
    phantom = b"phantom-1"
    # (name, topic, key, value, partition or None for the key's, reasons it may get)
    hostile: list[tuple[str, str, bytes, bytes, int | None, set[str]]] = [
        # (before amounts were bounded, encoding the state failed at commit time)
        (
            "1e18 amount",
            topics.transactions,
            target_key,
            sale("huge-amount", TARGET, 1, amount=1e18),
            None,
            {"out_of_range"},
        ),
        *(
            (
                f"50 KB station_id {n}",
                topics.transactions,
                target_key,
                sale(f"huge-station-{n}", TARGET, 2 + n, station_id=f"{n}" + "s" * 50_000),
                None,
                {"out_of_range"},
            )
            for n in range(3)
        ),
        ("5 MB gzip value", topics.transactions, target_key, big_value, None, {"too_large"}),
        ("3.5 MB key", topics.transactions, big_key, b"not json", None, {"invalid_json"}),
        (
            "forged hold -1,000,000",
            topics.member_commands,
            target_key,
            hold("hold", -1_000_000),
            target_partition,
            {"out_of_range"},
        ),
        (
            "confirm without hold",
            topics.member_commands,
            target_key,
            hold("confirm", 1_000_000),
            target_partition,
            {"unknown_hold"},
        ),
        (
            "referral accepted without claim",
            topics.member_commands,
            target_key,
            orjson.dumps(
                {
                    "member_id": TARGET,
                    "role": "referee",
                    "signup_event_id": "never-signed-up",
                    "code": "ABCD2345",
                    "status": "accepted",
                    "occurred_at": START.isoformat(),
                }
            ),
            target_partition,
            {"unknown_referral_claim"},
        ),
        (
            "stock reservation -1000",
            topics.stock_commands,
            b"car-wash",
            orjson.dumps(
                {
                    "stock": "reserve",
                    "request_id": "forged-2",
                    "reward_id": "car-wash",
                    "quantity": -1000,
                    "occurred_at": START.isoformat(),
                }
            ),
            owner_partition(b"car-wash", PARTITIONS),
            {"out_of_range"},
        ),
        (
            "rekeyed on the wrong partition",
            topics.rekeyed,
            phantom,
            sale("phantom-sale", phantom.decode(), 1),
            (owner_partition(phantom, PARTITIONS) + 1) % PARTITIONS,
            {"wrong_partition"},
        ),
    ]
    rounds = 5
    valid = {f"ok-{r}-{i}" for r in range(rounds) for i in range(len(MEMBERS))}
    hoarded = [
        (f"hoard-{n}", sale(f"hoard-{n}", HOARDER, n, station_id=f"station-{n}"))
        for n in range(HOARDER_SALES)
    ]
    per_round = HOARDER_SALES // rounds

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    reader = TopicReader(kafka_bootstrap, topics.deadletter, topics.rewards, topics.ledger)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        compression_type="gzip",
        max_request_size=16 * 1024 * 1024,  # checked before compression
    )
    try:
        worker.wait_ready()
        for round_number in range(rounds):  # valid sales before, between and after
            for member, value in valid_sales(round_number):
                producer.send(topics.transactions, key=member.encode(), value=value)
            for _, value in hoarded[round_number * per_round : (round_number + 1) * per_round]:
                producer.send(topics.transactions, key=HOARDER.encode(), value=value)
            producer.flush()
            if round_number < rounds - 1:  # the last round's sales come after every poison
                for _, topic, key, value, partition, _ in hostile[round_number :: rounds - 1]:
                    producer.send(topic, key=key, value=value, partition=partition)
                producer.flush()
        reader.wait_for(
            lambda r: (
                len({v["source_event_id"] for v in r.values(topics.rewards)})
                + len(r.records[topics.deadletter])
                >= len(valid) + len(hostile) + HOARDER_SALES
            ),
            timeout=120,
            what="a dead letter per hostile record, a reward per valid sale, every hoarded sale",
        )
        metrics = worker.metrics()
        assert worker.alive, worker.log_tail()
    finally:
        producer.close()
        reader.close()
        worker.stop()

    letters = {
        (letter["source_topic"], letter["value_sha256"]): letter
        for letter in reader.values(topics.deadletter)
    }
    refused = {
        transaction_id
        for transaction_id, value in hoarded
        if (topics.transactions, hashlib.sha256(value).hexdigest()) in letters
    }
    for transaction_id in refused:
        value = dict(hoarded)[transaction_id]
        letter = letters.pop((topics.transactions, hashlib.sha256(value).hexdigest()))
        assert letter["reason"] == "state_too_large", letter
    assert 0 < len(refused) < HOARDER_SALES
    assert len(letters) == len(hostile)
    for case, topic, key, value, _, reasons in hostile:
        letter = letters[topic, hashlib.sha256(value).hexdigest()]
        assert letter["reason"] in reasons, (case, letter["reason"], letter["message"])
        assert (letter["key_size"], letter["value_size"]) == (len(key), len(value)), case
        assert letter["key_sha256"] == hashlib.sha256(key).hexdigest(), case
        kept_key = base64.b64decode(letter["key_b64"])
        kept_value = base64.b64decode(letter["value_b64"])
        assert kept_key == key[: len(kept_key)] and kept_value == value[: len(kept_value)]
        assert letter["truncated"] == (len(kept_key) + len(kept_value) < len(key) + len(value))
    assert letters[topics.transactions, hashlib.sha256(big_value).hexdigest()]["truncated"]
    assert letters[topics.transactions, hashlib.sha256(b"not json").hexdigest()]["truncated"]
    for record in reader.records[topics.deadletter]:
        assert len(record.value) + len(record.key or b"") < MAX_MESSAGE_BYTES

    rewards = distinct(reader.values(topics.rewards), "reward_id")
    rewarded = [reward["source_event_id"] for reward in rewards]
    # each valid sale once, each hoarded sale rewarded or refused, nothing else
    assert sorted(rewarded) == sorted(valid | {t for t, _ in hoarded} - refused)
    assert {reward["member_id"] for reward in rewards} == {*MEMBERS, HOARDER}

    # The forged commands moved no points: the target's balance is its sales' ledger alone.
    ledger = distinct(reader.values(topics.ledger), "entry_id")
    target_entries = [entry for entry in ledger if entry["member_id"] == TARGET]
    forged = {"redemption", "redemption_refund", "referral_bonus"}
    assert not forged & {entry["reason"] for entry in target_entries}
    assert all(entry["source_event_id"] in valid for entry in target_entries)
    balances = [reward["balance_after"] for reward in rewards if reward["member_id"] == TARGET]
    assert max(balances) == sum(entry["delta"] for entry in target_entries) > 0

    for reason in {"state_too_large", *(letter["reason"] for letter in letters.values())}:
        assert f'loyalty_deadletters_total{{reason="{reason}"}}' in metrics
