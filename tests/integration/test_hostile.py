"""The hostile-record suite: records a fuzzer, a buggy POS or an attacker with access to
the topics would write, on every topic the workers read, to two workers on the real broker.

For every case: the record is dead-lettered with its documented reason (or, for the codecs,
processed), the workers stay up, and the valid sales produced around it (half before, half
after, for the same members) are each rewarded exactly once.

``LOYALTY_HOSTILE_SALES`` sets the valid sales around each case: 50 by default (the issue's
figure); the suite runs in CI as it is.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from kafka import KafkaProducer

from loyalty.streams.partitioning import owner_partition
from loyalty.streams.settings import Settings
from loyalty.streams.topics import MAX_MESSAGE_BYTES
from tests.integration.harness import TopicReader, isolated_settings, start_group

SALES_AROUND = int(os.environ.get("LOYALTY_HOSTILE_SALES", "50"))
PROCESSED = "processed"
"""Expected outcome of a record that is valid (the codec cases): its reward."""


@dataclass
class Case:
    family: str
    name: str
    topic: str
    """A field name of ``TopicNames``."""
    key: bytes | None
    value: bytes
    expected: str
    """The dead-letter reason, or ``PROCESSED``."""
    member: str
    """The member whose valid sales surround the record."""
    partition: int | None = None
    """None: the key's owner partition."""
    compression: str | None = None
    producer: dict[str, Any] = field(default_factory=dict)


def _time(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def sale(transaction_id: str, member: str, **overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "transaction_id": transaction_id,
        "member_id": member,
        "station_id": "station-1",
        "occurred_at": _time(30),
        "fuel_type": "diesel",
        "liters": 20,
        "amount": 33.0,
    }
    value.update(overrides)
    return value


def raw(value: Any) -> bytes:
    return orjson.dumps(value)


def cases(settings: Settings) -> list[Case]:
    """Every family of hostile record of issue 18."""
    parts = settings.partitions
    out: list[Case] = []

    def add(family: str, name: str, topic: str, value: bytes, expected: str, **kw: Any) -> None:
        member = kw.pop("member", f"m-{len(out):03d}")
        key = kw.pop("key", member.encode())
        out.append(Case(family, name, topic, key, value, expected, member, **kw))

    def member(index: int) -> str:
        return f"m-{index:03d}"

    # 1. codecs: a valid sale in a batch of every codec Kafka has.
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        m = member(len(out))
        add(
            "codec", codec, "transactions", raw(sale(f"{m}-codec", m)), PROCESSED, compression=codec
        )
    # 2. numbers the state cannot hold.
    m = member(len(out))
    add(
        "number", "amount 1e18", "transactions", raw(sale(f"{m}-h", m, amount=1e18)), "out_of_range"
    )
    m = member(len(out))
    add(
        "number",
        "liters 1e-300",
        "transactions",
        raw(sale(f"{m}-h", m, liters=1e-300)),
        "out_of_range",
    )
    m = member(len(out))
    add(
        "number",
        "liters NaN text",
        "transactions",
        raw(sale(f"{m}-h", m)).replace(b'"liters":20', b'"liters":NaN'),
        "invalid_json",
    )
    m = member(len(out))
    add(
        "number",
        "huge integer",
        "transactions",
        raw(sale(f"{m}-h", m)).replace(b'"liters":20', b'"liters":' + b"9" * 400),
        "out_of_range",
    )
    # 3. sizes: dead letters stay under the producer limit.
    m = member(len(out))
    add(
        "size",
        "5 MB gzip value",
        "transactions",
        raw(sale(f"{m}-h", m, padding="x" * 5 * 1024 * 1024)),
        "too_large",
        compression="gzip",
    )
    m = member(len(out))
    add(
        "size",
        "3.5 MB key, invalid value",
        "transactions",
        b"not json",
        "invalid_json",
        member=m,
        key=b"k" * (3 * 1024 * 1024 + 512 * 1024),
        compression="gzip",
    )
    # 4. string lengths.
    m = member(len(out))
    add(
        "length",
        "50 KB station_id",
        "transactions",
        raw(sale(f"{m}-h", m, station_id="s" * 50_000)),
        "out_of_range",
    )
    m = member(len(out))
    add(
        "length",
        "10 KB fuel_type",
        "transactions",
        raw(sale(f"{m}-h", m, fuel_type="d" * 10_000)),
        "out_of_range",
    )
    m = member(len(out))
    add(
        "length",
        "1,000 coupon codes",
        "transactions",
        raw(sale(f"{m}-h", m, coupon_codes=[f"C{i}" for i in range(1000)])),
        "out_of_range",
    )
    # 6. dates.
    m = member(len(out))
    add(
        "date",
        "sale dated 9999-12-30",
        "transactions",
        raw(sale(f"{m}-h", m, occurred_at="9999-12-30T00:00:00+00:00")),
        "out_of_range",
    )
    m = member(len(out))
    add(
        "date",
        "sale dated a day ahead of the clock",
        "transactions",
        raw(sale(f"{m}-h", m, occurred_at=_time(-24 * 60))),
        "future_timestamp",
    )
    m = member(len(out))
    add(
        "date",
        "sale dated year 1",
        "transactions",
        raw(sale(f"{m}-h", m, occurred_at="0001-01-01T00:00:00-05:00")),
        "out_of_range",
    )
    add(
        "date",
        "daily job for 9999-12-31",
        "daily",
        raw({"command": "daily", "date": "9999-12-31"}),
        "out_of_range",
        partition=0,
    )
    add(
        "date",
        "daily job for 2099-01-01",
        "daily",
        raw({"command": "daily", "date": "2099-01-01"}),
        "out_of_range",
        partition=1 % parts,
    )
    add("date", "daily job, not JSON", "daily", b"\x00\x01", "invalid_json", partition=0)
    # 7. values.
    m = member(len(out))
    add(
        "value",
        "duplicate key",
        "transactions",
        raw(sale(f"{m}-h", m, liters=10))[:-1] + b',"liters":900}',
        "duplicate_key",
    )
    m = member(len(out))
    escaped = raw(sale(f"{m}-h", m, liters=10))[:-1] + b',"li\\u0074ers":900}'
    add("value", "duplicate key, escaped", "transactions", escaped, "duplicate_key")
    for label, bad in (
        ("NUL", "\x00"),
        ("newline", "\n"),
        ("U+200B", "\u200b"),
        ("U+202E", "\u202e"),
    ):
        m = member(len(out))
        add(
            "value",
            f"member_id with {label}",
            "transactions",
            raw(sale(f"{m}-h", m + bad)),
            "invalid_value",
            member=m,
        )
    # 8. internal topics are not trusted.
    m = member(len(out))
    add(
        "internal",
        "forged referral accepted",
        "member_commands",
        raw(
            {
                "member_id": m,
                "role": "referrer",
                "signup_event_id": f"{m}-signup",
                "code": "FORGED1",
                "status": "accepted",
                "occurred_at": _time(40),
            }
        ),
        "unknown_referral_claim",
    )
    m = member(len(out))
    hold = {
        "redemption": "hold",
        "request_id": f"{m}-r",
        "member_id": m,
        "reward_id": "reward-1",
        "quantity": 1,
        "points": -1_000_000,
        "station_id": "station-1",
        "requested_at": _time(40),
        "occurred_at": _time(40),
    }
    add("internal", "hold of -1,000,000 points", "member_commands", raw(hold), "out_of_range")
    m = member(len(out))
    confirm = {
        **hold,
        "member_id": m,
        "request_id": f"{m}-r",
        "redemption": "confirm",
        "points": 10,
    }
    add("internal", "confirm without a hold", "member_commands", raw(confirm), "unknown_hold")
    m = member(len(out))
    add("internal", "member command, not JSON", "member_commands", b"{", "invalid_json")
    m = member(len(out))
    stock = {
        "stock": "reserve",
        "request_id": f"{m}-r",
        "reward_id": "reward-1",
        "quantity": -1000,
        "occurred_at": _time(40),
    }
    add(
        "internal",
        "reservation of -1000 units",
        "stock_commands",
        raw(stock),
        "out_of_range",
        key=b"reward-1",
        member=m,
    )
    m = member(len(out))
    add(
        "internal",
        "stock command, not JSON",
        "stock_commands",
        b"]",
        "invalid_json",
        key=b"reward-1",
        member=m,
    )
    m = member(len(out))
    add(
        "internal",
        "reply, not JSON",
        "redemption_steps",
        b"\xff",
        "invalid_utf8",
        key=f"{m}-r".encode(),
        member=m,
    )
    m = member(len(out))
    add(
        "internal",
        "referral op, not JSON",
        "referrals",
        b"nope",
        "invalid_json",
        key=b"CODE1",
        member=m,
    )
    m = member(len(out))
    wrong = (owner_partition(m.encode(), parts) + 1) % parts
    add(
        "internal",
        "rekeyed sale on the wrong partition",
        "rekeyed",
        raw(sale(f"{m}-h", m)),
        "wrong_partition",
        partition=wrong,
    )
    m = member(len(out))
    wrong = (owner_partition(m.encode(), parts) + 1) % parts
    add(
        "internal",
        "member command on the wrong partition",
        "member_commands",
        raw({**confirm, "member_id": m}),
        "wrong_partition",
        partition=wrong,
    )
    m = member(len(out))
    price = {"reward_id": "reward-9", "name": {"en": "Wash"}, "cost_points": -5}
    add(
        "internal",
        "catalog record, negative price",
        "catalog",
        raw(price),
        "invalid_value",
        key=b"reward-9",
        member=m,
    )
    m = member(len(out))
    add(
        "internal",
        "catalog record, not JSON",
        "catalog",
        b"\x00",
        "invalid_value",
        key=b"reward-8",
        member=m,
    )
    return out


def _producer(bootstrap: str, compression: str | None) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=compression,
        max_request_size=2 * MAX_MESSAGE_BYTES,
        acks="all",
    )


def _send(
    producer: KafkaProducer, topic: str, key: bytes | None, value: bytes, partition: int | None
) -> tuple[str, int, int]:
    meta = producer.send(topic, key=key, value=value, partition=partition).get(timeout=30)
    return meta.topic, meta.partition, meta.offset


def test_no_hostile_record_stops_a_worker(kafka_bootstrap, tmp_path):
    settings = isolated_settings(kafka_bootstrap, tmp_path)
    names = settings.topics
    workers = start_group(settings, tmp_path, count=2)
    reader = TopicReader(kafka_bootstrap, names.deadletter, names.rewards)
    all_cases = cases(settings)
    plain = _producer(kafka_bootstrap, None)
    producers: dict[str | None, KafkaProducer] = {None: plain}
    hostile: dict[tuple[str, int, int], Case] = {}
    valid: list[str] = []
    half = SALES_AROUND // 2
    try:
        for index, case in enumerate(all_cases):
            around = [
                sale(f"{case.member}-v{n}", case.member if n % 5 == 0 else f"v{index}-{n}")
                for n in range(SALES_AROUND)
            ]
            for value in around[:half]:
                _send(plain, names.transactions, value["member_id"].encode(), raw(value), None)
            producer = producers.get(case.compression)
            if producer is None:
                producer = producers[case.compression] = _producer(
                    kafka_bootstrap, case.compression
                )
            topic = getattr(names, case.topic)
            partition = case.partition
            if partition is None and case.key is not None:
                partition = owner_partition(case.key, settings.partitions)
            hostile[_send(producer, topic, case.key, case.value, partition)] = case
            for value in around[half:]:
                _send(plain, names.transactions, value["member_id"].encode(), raw(value), None)
            valid.extend(value["transaction_id"] for value in around)
        expected_letters = sum(case.expected != PROCESSED for case in all_cases)
        expected_rewards = set(valid) | {
            f"{case.member}-codec" for case in all_cases if case.expected == PROCESSED
        }

        def done(r: TopicReader) -> bool:
            rewarded = {value["source_event_id"] for value in r.values(names.rewards)}
            return len(r.records[names.deadletter]) >= expected_letters and expected_rewards <= (
                rewarded
            )

        reader.wait_for(done, timeout=240, what="every dead letter and every valid reward")
        reader.wait_for_end(timeout=30)
        for worker in workers:
            assert worker.alive, worker.log_tail()
    finally:
        for producer in producers.values():
            producer.close()
        reader.close()
        codes = [worker.stop() for worker in workers]

    assert codes == [0, 0], [worker.log_tail() for worker in workers]
    letters = {
        (value["source_topic"], value["partition"], value["offset"]): value
        for value in reader.values(names.deadletter)
    }
    results = []
    for where, case in hostile.items():
        letter = letters.get(where)
        outcome = PROCESSED if letter is None else letter["reason"]
        results.append((case.family, case.name, case.expected, outcome))
        if letter is not None:
            encoded = orjson.dumps(letter)
            assert len(encoded) <= MAX_MESSAGE_BYTES, case.name
            assert letter["value_sha256"] == hashlib.sha256(case.value).hexdigest(), case.name
            if not letter.get("truncated"):
                assert base64.b64decode(letter["value_b64"]) == case.value, case.name
    table = "\n".join(f"{f:9} {n:40} {e:24} {o}" for f, n, e, o in results)
    print(
        "\nfamily    case                                     expected                 got\n"
        + table
    )
    assert [(n, e) for _, n, e, _ in results] == [(n, o) for _, n, _, o in results], table

    rewards = Counter(value["source_event_id"] for value in reader.values(names.rewards))
    assert {tid: rewards[tid] for tid in valid if rewards[tid] != 1} == {}
    unexpected = set(letters) - set(hostile)
    assert not unexpected, [letters[where] for where in unexpected]
