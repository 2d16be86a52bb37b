"""The member profile API on two workers and the real broker.

Two workers of one app share 8 partitions; 1,000 members have one sale each. Every
profile and ledger is fetched from each worker: both give the same answer, read by the
owner of the member's partition (the other worker forwards), with the balance of the
member's reward event. Then schemathesis, driven by the ``/openapi.json`` a worker serves,
fuzzes the API and finds no server error and no answer off the document.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from loyalty.agents.openapi import EXAMPLE_MEMBER, OWNER_HEADER
from loyalty.demo.worker_process import WorkerProcess
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.settings import Settings
from loyalty.streams.topics import ensure_topics
from tests.integration.harness import (
    Reply,
    TopicReader,
    get,
    get_settled,
    isolated_settings,
    member_url,
    produce,
    start_group,
)

MEMBERS = 1000
PARTITIONS = 8


@dataclass(frozen=True)
class Cluster:
    settings: Settings
    workers: list[WorkerProcess]
    rewards: dict[str, dict[str, Any]]
    """Member -> the reward event of their sale."""

    def url(self, worker: WorkerProcess) -> str:
        return worker.settings.advertised_url


def member_ids() -> list[str]:
    members = [f"member-{index:05d}" for index in range(MEMBERS)]
    assert EXAMPLE_MEMBER in members  # the document's example is a member on record
    return members


def sale(member: str, index: int, occurred_at: datetime) -> tuple[bytes, bytes]:
    value = {
        "transaction_id": f"{member}-sale",
        "member_id": member,
        "station_id": f"station-{index % 7}",
        "occurred_at": occurred_at.isoformat(),
        "fuel_type": ("diesel", "gasoline95", "lpg")[index % 3],
        "liters": 5 + index % 40 + 0.25,
        "amount": round((5 + index % 40) * 1.6, 2),
    }
    return member.encode(), orjson.dumps(value)


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("profiles")
    settings = isolated_settings(kafka_bootstrap, tmp, partitions=PARTITIONS)
    ensure_topics(settings)
    workers = start_group(settings, tmp, 2)
    reader = TopicReader(kafka_bootstrap, settings.topics.rewards)
    try:
        members = member_ids()
        occurred_at = datetime.now(UTC) - timedelta(hours=1)
        sales = [sale(member, index, occurred_at) for index, member in enumerate(members)]
        produce(kafka_bootstrap, settings.topics.transactions, sales)
        reader.wait_for_members(
            settings.topics.rewards, MEMBERS, 90, "the reward event of every member's sale"
        )
        rewards = {reward["member_id"]: reward for reward in reader.values(settings.topics.rewards)}
        yield Cluster(settings, workers, rewards)
    finally:
        reader.close()
        for worker in workers:
            worker.stop()


def test_every_profile_is_the_owners_answer_on_either_worker(cluster):
    members = member_ids()
    partition_of = {member: owner_partition(member.encode(), PARTITIONS) for member in members}
    assert set(partition_of.values()) == set(range(PARTITIONS))
    urls = [cluster.url(worker) for worker in cluster.workers]
    deadline = time.monotonic() + 60

    def fetch(member: str) -> list[tuple[Reply, Reply]]:
        return [
            (
                get_settled(member_url(url, member), deadline),
                get_settled(member_url(url, member, "/ledger?limit=50"), deadline),
            )
            for url in urls
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = dict(zip(members, pool.map(fetch, members), strict=True))

    owner_of_partition: dict[int, str] = {}
    for member, ((profile, ledger), (other_profile, other_ledger)) in replies.items():
        for reply in (profile, ledger, other_profile, other_ledger):
            assert reply.status == 200, (member, reply)
        assert profile.body == other_profile.body
        assert ledger.body == other_ledger.body
        owner = profile.headers[OWNER_HEADER]
        assert {owner} == {
            reply.headers[OWNER_HEADER] for reply in (ledger, other_profile, other_ledger)
        }
        assert owner_of_partition.setdefault(partition_of[member], owner) == owner
        reward = cluster.rewards[member]
        assert profile.body["member_id"] == member
        assert profile.body["balance"] == reward["balance_after"] == reward["points"]
        assert profile.body["tier"] == "bronze"
        assert profile.body["stats"]["lifetime_sales"] == 1
        entries = ledger.body["entries"]
        assert [entry["reason"] for entry in entries] == ["welcome_bonus", "fuel_points"]
        assert entries[0]["balance_after"] == reward["balance_after"]
        assert {entry["source_event_id"] for entry in entries} == {f"{member}-sale"}
    # Each worker owns some partitions, so each answered some requests by forwarding.
    assert set(owner_of_partition.values()) == set(urls)


def test_unknown_and_malformed_members_on_either_worker(cluster):
    deadline = time.monotonic() + 30
    for worker in cluster.workers:
        base = cluster.url(worker)
        for member in ("member-99999", "no.such-member"):
            for suffix in ("", "/ledger"):
                reply = get_settled(member_url(base, member, suffix), deadline)
                assert (reply.status, reply.body["error"]) == (404, "unknown_member")
        for member in ("m" * 65, "no/such member", "zw\u200bsp"):
            for suffix in ("", "/ledger"):
                reply = get(member_url(base, member, suffix))
                assert (reply.status, reply.body["error"]) == (400, "malformed_member_id")
        for limit in ("0", "51", "ten"):
            reply = get(member_url(base, EXAMPLE_MEMBER, f"/ledger?limit={limit}"))
            assert (reply.status, reply.body["error"]) == (400, "invalid_limit")


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(cluster, tmp_path):
    base = cluster.url(cluster.workers[0])
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance,negative_data_rejection",
        "--max-examples",
        "100",
        "--seed",
        "5",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    print(run.stdout[-3000:], f"\nschemathesis took {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_while_a_worker_leaves_requests_get_the_answer_or_503_then_the_other_answers(cluster):
    """Runs last: it stops the second worker. Until the first has taken over every
    partition, a request gets the member's profile or a 503 with ``Retry-After`` (the
    owner unknown, or gone before the group noticed), never another status."""
    staying, leaving = cluster.workers
    base = cluster.url(staying)
    partition_of = {member: owner_partition(member.encode(), PARTITIONS) for member in member_ids()}
    probes = {partition: member for member, partition in reversed(partition_of.items())}
    assert leaving.process is not None
    leaving.process.send_signal(signal.SIGTERM)  # leaves the group first, then shuts down
    statuses: list[int] = []
    deadline = time.monotonic() + 60
    while True:
        replies = {member: get(member_url(base, member)) for member in probes.values()}
        for reply in replies.values():
            statuses.append(reply.status)
            assert reply.status in (200, 503), reply
            if reply.status == 503:
                assert reply.body["error"] == "owner_unavailable"
                assert int(reply.headers["Retry-After"]) >= 1
        if all(
            reply.status == 200 and reply.headers[OWNER_HEADER] == base
            for reply in replies.values()
        ):
            break
        assert time.monotonic() < deadline, f"no take-over after 60 s: {replies}"
        time.sleep(0.1)  # polling interval, not synchronisation
    print(f"\n{statuses.count(503)} answers 503 and {statuses.count(200)} 200 while taking over")
    for member in partition_of:
        reply = get_settled(member_url(base, member), deadline)
        assert reply.status == 200
        assert reply.body["balance"] == cluster.rewards[member]["balance_after"]
    # It was sent SIGTERM above: wait for its clean exit (a second SIGTERM would force it).
    assert leaving.process.wait(timeout=15) == 0
