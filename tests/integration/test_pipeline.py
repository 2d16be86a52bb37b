"""The earning pipeline end to end on the real broker, with a worker in its own process.

These tests are about delivery (duplicates, wrong keys, restarts), so they run the default
program without missions and upper tiers; expected balances are computed here from the
remaining published rules (points per litre, x2 strictly above 15 litres, +100 on the
first sale) with integer arithmetic on centilitres: the engine's rule code is never called.
"""

from __future__ import annotations

import random
import shutil
import signal
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from loyalty.demo.worker_process import WorkerProcess
from loyalty.schemas.state import decode_state
from loyalty.streams.settings import DEFAULT_PROGRAM
from loyalty.streams.topics import changelog_topic_name, ensure_topics
from tests.integration.harness import TopicReader, distinct, isolated_settings, produce

MEMBERS = 100
TRANSACTIONS = 1000
DUPLICATES = 80


def generate_transactions(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
    transactions = []
    for index in range(TRANSACTIONS):
        # The first hundred give every member at least one sale.
        member = index if index < MEMBERS else rng.randrange(MEMBERS)
        centiliters = rng.choice([1499, 1500, 1501]) if index % 20 == 0 else rng.randrange(50, 9000)
        transactions.append(
            {
                "transaction_id": f"pos-{index:05d}",
                "member_id": f"member-{member:03d}",
                "station_id": f"station-{rng.randrange(25):02d}",
                "occurred_at": (start + timedelta(minutes=7 * index)).isoformat(),
                "fuel_type": rng.choice(["diesel", "gasoline95", "gasoline98", "lpg"]),
                "liters": centiliters / 100,
                "amount": round(centiliters * 0.0165, 2),
                "pump": rng.randrange(1, 9),  # unknown fields are ignored
            }
        )
    return transactions


def expected_points(transaction: dict) -> int:
    centiliters = round(transaction["liters"] * 100)
    multiplier = 2 if centiliters > 1500 else 1
    return centiliters * multiplier // 100


def expectations(transactions: list[dict]) -> tuple[dict[str, int], int]:
    """Balance per member, and the number of distinct ledger entries."""
    balances: dict[str, int] = defaultdict(int)
    entries = 0
    for transaction in transactions:
        member = transaction["member_id"]
        if member not in balances:
            balances[member] = 100
            entries += 1
        points = expected_points(transaction)
        balances[member] += points
        entries += points > 0
    return dict(balances), entries


def messages(transactions: list[dict], seed: int = 11) -> list[tuple[bytes | None, bytes]]:
    """Every transaction once, plus resent duplicates; keys right, wrong or missing."""
    rng = random.Random(seed)
    resent = rng.sample(transactions, DUPLICATES)
    sent = []
    for transaction in transactions + resent:
        roll = rng.random()
        if roll < 0.8:
            key: bytes | None = transaction["member_id"].encode()
        elif roll < 0.9:
            key = f"member-{rng.randrange(MEMBERS):03d}".encode()
        else:
            key = None
        sent.append((key, orjson.dumps(transaction)))
    return sent


def earning_only_settings(bootstrap, tmp_path):
    """Isolated settings running the default program minus missions and upper tiers."""
    text = DEFAULT_PROGRAM.read_text()
    start = text.index('[[tiers.levels]]\nname = "silver"')
    end = text.index("[coupons.newsletter]")
    program = tmp_path / "earning-only.toml"
    program.write_text(text[:start] + text[end:])
    return replace(isolated_settings(bootstrap, tmp_path), program_path=program)


def check_outputs(reader: TopicReader, settings, transactions: list[dict]) -> None:
    balances, entry_count = expectations(transactions)
    topics = settings.topics
    reader.wait_for(
        lambda r: (
            len(distinct(r.values(topics.rewards), "reward_id")) >= TRANSACTIONS
            and len(distinct(r.values(topics.ledger), "entry_id")) >= entry_count
        ),
        timeout=120,
        what="a reward for every transaction and every ledger entry",
    )
    rewards = distinct(reader.values(topics.rewards), "reward_id")
    ledger = distinct(reader.values(topics.ledger), "entry_id")
    assert len(rewards) == TRANSACTIONS
    assert len(ledger) == entry_count
    assert reader.values(topics.deadletter) == []

    deltas: dict[str, int] = defaultdict(int)
    by_member: dict[str, list[dict]] = defaultdict(list)
    for entry in ledger:
        deltas[entry["member_id"]] += entry["delta"]
        by_member[entry["member_id"]].append(entry)
    assert deltas == balances
    # Every entry's balance_after continues the one before it (in balance order: this
    # program only credits). Not topic order: after a crash, the outputs of the last batch
    # are re-emitted when its input is replayed, possibly after later events' outputs.
    for member, entries in by_member.items():
        balance = 0
        for entry in sorted(entries, key=lambda entry: entry["balance_after"]):
            assert entry["balance_after"] - entry["delta"] == balance, entry
            balance = entry["balance_after"]
        assert balance == balances[member]
    by_transaction = {reward["source_event_id"]: reward["points"] for reward in rewards}
    assert {t["transaction_id"] for t in transactions} == by_transaction.keys()


def metric_value(text: str, name: str) -> float:
    """The value of an unlabelled metric in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def table_balances(settings) -> dict[str, int]:
    """Balances as stored in the member table, read from its changelog topic."""
    changelog = changelog_topic_name(settings.app_id, "member_to_state")
    reader = TopicReader(settings.kafka_bootstrap, changelog)
    try:
        reader.wait_for_end(timeout=60)
        return {
            record.key.decode(): decode_state(record.value).balance
            for record in reader.records[changelog]
        }
    finally:
        reader.close()


@pytest.fixture
def reader_factory():
    readers = []

    def make(settings) -> TopicReader:
        topics = settings.topics
        reader = TopicReader(
            settings.kafka_bootstrap, topics.ledger, topics.rewards, topics.deadletter
        )
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


def test_balances_match_an_independent_computation(kafka_bootstrap, tmp_path, reader_factory):
    settings = earning_only_settings(kafka_bootstrap, tmp_path)
    transactions = generate_transactions()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        produce(kafka_bootstrap, settings.topics.transactions, messages(transactions))
        check_outputs(reader_factory(settings), settings, transactions)
        metrics = worker.metrics()
        assert 'outcome="rerouted"' in metrics
        assert 'outcome="duplicate"' in metrics
    finally:
        worker.stop()
    assert table_balances(settings) == expectations(transactions)[0]


@pytest.mark.parametrize(
    ("stop_signal", "keep_local_state"),
    [
        (signal.SIGTERM, True),
        (signal.SIGKILL, True),
        (signal.SIGKILL, False),  # cold start: the table is rebuilt from its changelog
    ],
    ids=["sigterm-warm", "sigkill-warm", "sigkill-cold"],
)
def test_restart_mid_stream_keeps_balances_exact(
    kafka_bootstrap, tmp_path, reader_factory, stop_signal, keep_local_state
):
    settings = earning_only_settings(kafka_bootstrap, tmp_path)
    transactions = generate_transactions(seed=stop_signal.value + keep_local_state)
    ensure_topics(settings)
    produce(kafka_bootstrap, settings.topics.transactions, messages(transactions))
    reader = reader_factory(settings)

    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        reader.wait_for(
            lambda r: len(distinct(r.values(settings.topics.rewards), "reward_id")) >= 150,
            timeout=90,
            what="the first worker to get going",
        )
    finally:
        first.stop(stop_signal)
    processed_before_stop = len(distinct(reader.values(settings.topics.rewards), "reward_id"))
    if not keep_local_state:
        shutil.rmtree(settings.data_dir)

    second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        second.wait_ready()
        check_outputs(reader, settings, transactions)
        restored = metric_value(second.metrics(), "loyalty_changelog_records_restored_total")
    finally:
        second.stop()
    if not keep_local_state:  # rebuilt from the changelog in batches (faust_patches 4)
        assert restored > 0
    assert processed_before_stop < TRANSACTIONS, "the stop did not happen mid-stream"
    assert table_balances(settings) == expectations(transactions)[0]
