"""The order of one member's records across input topics, on the real broker (issue 19,
defect 3): a record published after the broker acknowledged another one of the same
member, on another topic, is applied after it.

Expected outcomes come from the published rules: a signup enrols the member (reward
``enrolled`` true, balance 0); the member's first sale then earns its fuel points and the
+100 welcome bonus and does not enrol (the default program).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
from kafka import KafkaProducer

from loyalty.demo.worker_process import WorkerProcess
from loyalty.streams.topics import ensure_topics
from tests.integration.harness import TopicReader, distinct, isolated_settings

MEMBERS = 96
LITERS = 20.0
SALE_POINTS = 40 + 100  # 20 L above 15 L: x2; the welcome bonus on the first sale


def test_a_sale_published_after_its_signup_was_acknowledged_is_applied_after_it(
    kafka_bootstrap, tmp_path
):
    settings = isolated_settings(kafka_bootstrap, tmp_path)
    ensure_topics(settings)
    topics = settings.topics
    run = uuid.uuid4().hex[:6]
    members = [f"member-{run}-{index:03d}" for index in range(MEMBERS)]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    reader = TopicReader(kafka_bootstrap, topics.rewards, topics.deadletter)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=0)
    try:
        worker.wait_ready(assigned=True)
        for index, member in enumerate(members):
            signed_up = start + timedelta(seconds=2 * index)
            signup = {
                "event_id": f"{member}-signup",
                "member_id": member,
                "type": "signup",
                "occurred_at": signed_up.isoformat(),
            }
            sale = {
                "transaction_id": f"{member}-sale",
                "member_id": member,
                "station_id": "station-7",
                "occurred_at": (signed_up + timedelta(seconds=1)).isoformat(),
                "fuel_type": "diesel",
                "liters": LITERS,
                "amount": 30.0,
            }
            key = member.encode()
            # The sale is produced only once the broker has acknowledged the signup.
            producer.send(topics.members, key=key, value=orjson.dumps(signup)).get(timeout=30)
            producer.send(topics.transactions, key=key, value=orjson.dumps(sale))
        producer.flush()

        reader.wait_for(
            lambda r: len(distinct(r.values(topics.rewards), "reward_id")) >= 2 * MEMBERS,
            timeout=120,
            what=f"{2 * MEMBERS} reward events",
        )
        rewards = {
            reward["source_event_id"]: reward
            for reward in distinct(reader.values(topics.rewards), "reward_id")
        }
        assert reader.values(topics.deadletter) == []
        outcomes = {
            member: (
                rewards[f"{member}-signup"]["enrolled"],
                rewards[f"{member}-signup"]["balance_after"],
                rewards[f"{member}-sale"]["enrolled"],
                rewards[f"{member}-sale"]["balance_after"],
            )
            for member in members
        }
        expected = (True, 0, False, SALE_POINTS)
        wrong = {member: got for member, got in outcomes.items() if got != expected}
        assert wrong == {}, f"{len(wrong)} of {MEMBERS} members applied out of order: {wrong}"
    finally:
        producer.close()
        reader.close()
        worker.stop()
