"""Bad input goes to the dead-letter topic with its reason and original bytes; the worker
keeps running and counts it by reason."""

from __future__ import annotations

import base64

import orjson

from loyalty.demo.worker_process import WorkerProcess
from tests.integration.harness import TopicReader, isolated_settings, produce

KEY = b"member-dlq"


def sale(**overrides) -> bytes:
    value = {
        "transaction_id": "ok-1",
        "member_id": "member-dlq",
        "station_id": "station-1",
        "occurred_at": "2026-11-02T09:15:00+01:00",
        "fuel_type": "diesel",
        "liters": 30,
        "amount": 49.5,
    }
    value.update(overrides)
    return orjson.dumps({k: v for k, v in value.items() if v is not None})


ONE_MEGABYTE = sale(transaction_id="big", padding="x" * 1024 * 1024)

BAD_INPUT = [
    ("not JSON", b"liters=30;member=42", "invalid_json"),
    ("not UTF-8", b'{"member_id": "\xff\xfe"}', "invalid_utf8"),
    ("JSON but not an object", b'["member-dlq", 30]', "not_an_object"),
    ("wrong type", sale(transaction_id="t-type", liters="30"), "invalid_type"),
    ("missing field", sale(transaction_id="t-missing", member_id=None), "missing_field"),
    ("out of range", sale(transaction_id="t-range", liters=1500), "out_of_range"),
    (
        "naive timestamp",
        sale(transaction_id="t-naive", occurred_at="2026-11-02T09:15:00"),
        "naive_timestamp",
    ),
    (
        "unparseable timestamp",
        sale(transaction_id="t-date", occurred_at="02/11/2026"),
        "invalid_timestamp",
    ),
    ("unknown type", sale(transaction_id="t-kind", type="void"), "invalid_value"),
    ("1 MB value", ONE_MEGABYTE, "too_large"),
    (
        "refund of an unknown sale",
        sale(transaction_id="t-refund", type="refund", original_transaction_id="never-sold"),
        "unknown_original_transaction",
    ),
]


def test_every_kind_of_bad_input_is_dead_lettered_and_the_worker_goes_on(kafka_bootstrap, tmp_path):
    settings = isolated_settings(kafka_bootstrap, tmp_path)
    topics = settings.topics
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    reader = TopicReader(kafka_bootstrap, topics.deadletter, topics.rewards)
    try:
        worker.wait_ready()
        # Same key, so all land on one partition, in order, before the good sale.
        produce(
            kafka_bootstrap,
            topics.transactions,
            [(KEY, value) for _, value, _ in BAD_INPUT] + [(KEY, sale())],
        )
        reader.wait_for(
            lambda r: (
                len(r.records[topics.deadletter]) >= len(BAD_INPUT)
                and len(r.records[topics.rewards]) >= 1
            ),
            timeout=60,
            what="one dead letter per bad input and the good sale's reward",
        )
        metrics = worker.metrics()
        assert worker.alive
    finally:
        reader.close()
        worker.stop()

    letters = reader.values(topics.deadletter)
    assert len(letters) == len(BAD_INPUT)
    for (case, value, reason), letter in zip(BAD_INPUT, letters, strict=True):
        assert letter["reason"] == reason, case
        assert letter["message"], case
        assert base64.b64decode(letter["value_b64"]) == value, case
        assert base64.b64decode(letter["key_b64"]) == KEY, case
        assert letter["source_topic"] == topics.transactions
    offsets = [letter["offset"] for letter in letters]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)

    reward = reader.values(topics.rewards)[0]
    assert reward["source_event_id"] == "ok-1"
    assert reward["points"] == 60 + 100

    for _, _, reason in BAD_INPUT:
        assert f'loyalty_deadletters_total{{reason="{reason}"}} 1.0' in metrics
