"""Redemptions on the real broker with two workers (issue 6 acceptance).

100 members, each with one sale (160 points: 100 welcome + 60 fuel), race for a reward of
stock 10 (50 points) with 200 requests, two per member:

1. exactly 10 are confirmed, every other one rejected with a reason; balances and stock
   exact;
2. the same race for a second reward with one worker SIGKILLed in the middle and
   restarted: the invariants still hold and every request ends confirmed or rejected;
3. a confirmed redemption cancelled twice: the points and the unit come back exactly once.

Outcomes are read from the reward events (``source_type`` ``redemption``); balances from
the member profile API of either worker and from the ledger; stock from ``GET /catalog``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from loyalty.demo.worker_process import WorkerProcess
from loyalty.schemas.catalog import Reward, encode_reward
from loyalty.streams.settings import Settings
from loyalty.streams.topics import ensure_topics
from tests.integration.harness import (
    TopicReader,
    get,
    get_settled,
    isolated_settings,
    member_url,
    produce,
    start_group,
)

PARTITIONS = 8
MEMBERS = 100
STOCK = 10
COST = 50
START_POINTS = 160
"""A 30 L sale: 60 fuel points (x2 over 15 L) and the 100-point welcome bonus."""
TERMINAL = ("confirmed", "rejected")


@dataclass(frozen=True)
class Cluster:
    settings: Settings
    workers: list[WorkerProcess]
    reader: TopicReader

    def urls(self) -> list[str]:
        return [worker.settings.advertised_url for worker in self.workers]


def members() -> list[str]:
    return [f"redeemer-{index:03d}" for index in range(MEMBERS)]


def publish_reward(settings: Settings, reward_id: str) -> None:
    reward = Reward(reward_id, {"en": f"Gift {reward_id}"}, COST, STOCK, True, None)
    produce(
        settings.kafka_bootstrap,
        settings.topics.catalog,
        [(reward_id.encode(), encode_reward(reward))],
    )


def requests_for(reward_id: str) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC)
    messages = []
    for round_number in range(2):
        for member in members():
            request_id = f"{reward_id}-{member}-{round_number}"
            value = {
                "request_id": request_id,
                "member_id": member,
                "reward_id": reward_id,
                "quantity": 1,
                "station_id": "st-9",
                "occurred_at": now.isoformat(),
            }
            messages.append((request_id.encode(), orjson.dumps(value)))
    return messages


def send_requests(cluster: Cluster, reward_id: str) -> None:
    settings = cluster.settings
    produce(settings.kafka_bootstrap, settings.topics.redemptions, requests_for(reward_id))


def outcomes(cluster: Cluster, reward_id: str) -> dict[str, dict[str, Any]]:
    """Terminal outcome (confirmed or rejected) by request_id, from the reward events."""
    found = {}
    for reward in cluster.reader.values(cluster.settings.topics.rewards):
        redemption = reward.get("redemption")
        if redemption and redemption["reward_id"] == reward_id and redemption["status"] in TERMINAL:
            found[redemption["request_id"]] = redemption
    return found


def wait_for_catalog(cluster: Cluster, reward_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for url in cluster.urls():
        while True:
            reply = get(f"{url}/catalog")
            if reply.status == 200 and any(r["reward_id"] == reward_id for r in reply.body):
                break
            assert time.monotonic() < deadline, f"{reward_id} not in {url}/catalog: {reply}"
            time.sleep(0.1)  # polling interval, not synchronisation


def remaining(cluster: Cluster, reward_id: str) -> list[int]:
    """The live stock of ``reward_id`` as each worker shows it."""
    result = []
    for url in cluster.urls():
        listing = get(f"{url}/catalog").body
        result.append(next(r["remaining"] for r in listing if r["reward_id"] == reward_id))
    return result


def wait_for_remaining(cluster: Cluster, reward_id: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (seen := remaining(cluster, reward_id)) != [expected] * len(cluster.workers):
        assert time.monotonic() < deadline, f"{reward_id} remaining {seen}, not {expected}"
        time.sleep(0.1)  # polling interval, not synchronisation


def balances(cluster: Cluster) -> dict[str, int]:
    """Every member's balance from the profile API, each from a different worker in turn."""
    deadline = time.monotonic() + 60
    found = {}
    for index, member in enumerate(members()):
        url = cluster.urls()[index % len(cluster.workers)]
        reply = get_settled(member_url(url, member), deadline)
        assert reply.status == 200, reply
        found[member] = reply.body["balance"]
    return found


def redemption_ledger(cluster: Cluster) -> Counter[tuple[str, str]]:
    """(member, reason) of every distinct redemption ledger entry."""
    entries = {
        entry["entry_id"]: entry
        for entry in cluster.reader.values(cluster.settings.topics.ledger)
        if entry["reason"].startswith("redemption")
    }
    return Counter((entry["member_id"], entry["reason"]) for entry in entries.values())


def member_of(request_id: str, reward_id: str) -> str:
    """The member of a request id made by :func:`requests_for`."""
    return request_id.removeprefix(f"{reward_id}-").rsplit("-", 1)[0]


def points_spent(found: dict[str, dict[str, Any]], reward_id: str) -> Counter[str]:
    spent: Counter[str] = Counter()
    for request_id, outcome in found.items():
        if outcome["status"] == "confirmed":
            spent[member_of(request_id, reward_id)] += outcome["points"]
    return spent


def check_race(cluster: Cluster, reward_id: str, found: dict[str, dict[str, Any]]) -> None:
    assert len(found) == 2 * MEMBERS  # every request ended confirmed or rejected
    statuses = Counter(outcome["status"] for outcome in found.values())
    assert statuses == {"confirmed": STOCK, "rejected": 2 * MEMBERS - STOCK}
    reasons = Counter(o["reason"] for o in found.values() if o["status"] == "rejected")
    print(f"{reward_id}: {dict(statuses)}, rejections {dict(reasons)}")
    assert set(reasons) <= {"out_of_stock", "insufficient_points"}
    assert all(o["reason"] is None for o in found.values() if o["status"] == "confirmed")
    wait_for_remaining(cluster, reward_id, 0, timeout=30)


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("redemptions")
    settings = isolated_settings(kafka_bootstrap, tmp, partitions=PARTITIONS)
    ensure_topics(settings)
    workers = start_group(settings, tmp, 2)
    topics = settings.topics
    reader = TopicReader(kafka_bootstrap, topics.rewards, topics.ledger, topics.deadletter)
    try:
        occurred_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        sales = [
            (
                member.encode(),
                orjson.dumps(
                    {
                        "transaction_id": f"{member}-sale",
                        "member_id": member,
                        "station_id": "st-1",
                        "occurred_at": occurred_at,
                        "fuel_type": "diesel",
                        "liters": 30,
                        "amount": 48.0,
                    }
                ),
            )
            for member in members()
        ]
        produce(kafka_bootstrap, topics.transactions, sales)
        reader.wait_for_members(topics.rewards, MEMBERS, 90, "every member's sale")
        yield Cluster(settings, workers, reader)
    finally:
        reader.close()
        for worker in workers:
            worker.stop()


def test_a_race_for_ten_units_confirms_exactly_ten(cluster):
    assert set(balances(cluster).values()) == {START_POINTS}
    publish_reward(cluster.settings, "wash")
    wait_for_catalog(cluster, "wash")
    produce(
        cluster.settings.kafka_bootstrap, cluster.settings.topics.redemptions, requests_for("wash")
    )
    cluster.reader.wait_for(
        lambda r: len(outcomes(cluster, "wash")) >= 2 * MEMBERS,
        timeout=120,
        what="an outcome for each of the 200 requests",
    )
    found = outcomes(cluster, "wash")
    check_race(cluster, "wash", found)
    spent = points_spent(found, "wash")
    now = balances(cluster)
    assert now == {member: START_POINTS - spent[member] for member in members()}
    ledger = redemption_ledger(cluster)
    assert sum(ledger.values()) == STOCK
    assert dict(ledger) == {(member, "redemption"): spent[member] // COST for member in spent}


def test_the_race_survives_a_worker_killed_in_the_middle(cluster):
    before = balances(cluster)
    publish_reward(cluster.settings, "coffee")
    wait_for_catalog(cluster, "coffee")
    produce(
        cluster.settings.kafka_bootstrap,
        cluster.settings.topics.redemptions,
        requests_for("coffee"),
    )
    cluster.reader.wait_for(
        lambda r: len(outcomes(cluster, "coffee")) >= 20,
        timeout=60,
        what="the race under way",
    )
    victim = cluster.workers[1]
    at_kill = len(outcomes(cluster, "coffee"))
    victim.stop(signal.SIGKILL)
    victim.start()
    victim.wait_ready()
    cluster.reader.wait_for(
        lambda r: len(outcomes(cluster, "coffee")) >= 2 * MEMBERS,
        timeout=180,
        what="an outcome for each of the 200 requests after the restart",
    )
    found = outcomes(cluster, "coffee")
    print(f"\nworker 2 SIGKILLed with {at_kill} of 200 outcomes out; after the restart:")
    check_race(cluster, "coffee", found)
    spent = points_spent(found, "coffee")
    after = balances(cluster)
    assert after == {member: before[member] - spent[member] for member in members()}
    assert min(after.values()) >= 0
    # the ledger holds each debit once (redelivered steps re-emit the same entry ids)
    assert sum(redemption_ledger(cluster).values()) == 2 * STOCK


def test_a_cancellation_delivered_twice_returns_points_and_stock_once(cluster):
    found = outcomes(cluster, "wash")
    request_id = sorted(r for r in found if found[r]["status"] == "confirmed")[0]
    member = member_of(request_id, "wash")
    before = balances(cluster)[member]
    cancel = {
        "type": "cancelled",
        "request_id": request_id,
        "station_id": "st-9",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    messages = [(request_id.encode(), orjson.dumps(cancel))] * 2
    produce(cluster.settings.kafka_bootstrap, cluster.settings.topics.redemptions, messages)
    wait_for_remaining(cluster, "wash", 1, timeout=60)
    cluster.reader.wait_for(
        lambda r: redemption_ledger(cluster)[member, "redemption_refund"] >= 1,
        timeout=60,
        what="the refund in the ledger",
    )
    url = member_url(cluster.urls()[0], member, "/redemptions")
    reply = get_settled(url, time.monotonic() + 60)
    statuses = {r["request_id"]: r["status"] for r in reply.body["redemptions"]}
    assert statuses[request_id] == "cancelled"
    assert balances(cluster)[member] == before + COST
    # The second cancellation re-sent the same steps: nothing applied twice.
    cluster.reader.wait_for_end(timeout=30)
    assert redemption_ledger(cluster)[member, "redemption_refund"] == 1
    assert remaining(cluster, "wash") == [1, 1]
