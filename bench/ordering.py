"""What applying a member's records in timestamp order across topics costs (issue 19).

    python -m loyalty.bench.ordering             # the hot path alone, no broker: a few seconds
    python -m loyalty.bench.ordering --broker    # and the latency on a local broker: about a minute

1. **Hot path** (no broker). The account agent's ordering step (``streams.ordering`` with
   the worker's own lagging check, ``faust_patches.lagging_partitions``, over a real aiokafka
   subscription state: 8 partitions of the 6 member-input topics, all caught up) takes
   batches of 1 to 2,000 messages (95% transactions, 5% member events, spread over the
   partitions), as the batcher hands them over. Printed: microseconds per message, and as a
   share of the engine's own work per transaction (decode, rules, render, encode: the
   benchmark's pure path, measured here on 5,000 transactions).
2. **Latency** (``--broker``). A local broker and one worker per run, each with its
   ``LOYALTY_MAX_PARTITION_IDLE_MS`` (``--idle``: the default, then 0, no wait). A paced producer
   sends ``--pairs`` new members a second, each a signup and, once the broker acknowledged
   it, a sale (event times one second apart), and ``--sales`` sales a second of other
   members, for ``--seconds`` (after a 10 s warm-up run, not reported). Latency: a reward
   event read minus its input's send time, by kind; the members whose sale was applied
   before their signup; and the worker's own count of waits (``loyalty_order_wait_seconds``,
   ``loyalty_order_waits_expired``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition

from loyalty.agents.accounts import member_inputs_by_rank
from loyalty.bench.cluster import Bench
from loyalty.bench.options import BenchOptions
from loyalty.bench.pure_path import run_pure_path
from loyalty.bench.stats import LatencySummary, summarize
from loyalty.core.program import load_program
from loyalty.demo.worker_process import WorkerProcess
from loyalty.localkafka import broker
from loyalty.streams import faust_patches
from loyalty.streams.ordering import CoPartitionedOrder
from loyalty.streams.settings import Settings, TopicNames

PARTITIONS = 8
BATCH_SIZES = (1, 10, 100, 1000, 2000)
MESSAGES_PER_SIZE = 200_000
WARM_UP_S = 10.0


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp: float


def _caught_up_app(topics: tuple[str, ...]) -> tuple[Any, SubscriptionState]:
    """A Faust app as the lagging check reads it, around a real aiokafka subscription (call
    in a running event loop, which aiokafka's state wants; nothing runs on it)."""
    subscription = SubscriptionState()
    subscription.assign_from_user(
        {TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)}
    )
    assignment = subscription.subscription.assignment
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        state.seek(0)
        state.highwater = 0
        state.timestamp = 0
    client = SimpleNamespace(_subscription=subscription)
    consumer = SimpleNamespace(_thread=SimpleNamespace(_consumer=client), flow_active=True)
    app = SimpleNamespace(
        consumer=consumer, consumer_generation_id=1, tables=SimpleNamespace(_recovery=None)
    )
    consumer.app = app
    return app, subscription


def _batches(topics: tuple[str, ...], size: int, count: int, seed: int) -> list[list[Message]]:
    rng = random.Random(seed)
    members, transactions = topics[0], topics[2]
    offsets: dict[tuple[str, int], int] = {}
    batches = []
    clock = 1_800_000_000.0
    for _ in range(count // size):
        batch = []
        for _ in range(size):
            topic = members if rng.random() < 0.05 else transactions
            partition = rng.randrange(PARTITIONS)
            offset = offsets.get((topic, partition), 0)
            offsets[topic, partition] = offset + 1
            clock += 0.001
            batch.append(Message(topic, partition, offset, round(clock, 3)))
        batches.append(batch)
    return batches


def _fetched(app: Any, subscription: SubscriptionState, batch: list[Message], at: int) -> None:
    """What the client knows once it handed ``batch`` to Faust, from a fetch response at
    ``at`` (ms) covering every partition (one broker): positions and high watermarks just
    past it (nothing more on the broker), and the offsets handed over."""
    assignment = subscription.subscription.assignment
    for tp in assignment.tps:
        assignment.state_value(tp).timestamp = at
    last: dict[tuple[str, int], int] = {}
    for message in batch:
        last[message.topic, message.partition] = message.offset
    records = {}
    for (topic, partition), offset in last.items():
        state = assignment.state_value(TopicPartition(topic, partition))
        state.consumed_to(offset + 1)
        state.highwater = offset + 1
        records[TopicPartition(topic, partition)] = [SimpleNamespace(offset=offset)]
    faust_patches._note_returned(app.consumer, records)


def hot_path(seed: int = 7) -> list[tuple[int, float, int]]:
    """(batch size, microseconds of the ordering step per message, messages held at the
    end) for each batch size."""
    return asyncio.run(_hot_path(seed))


async def _hot_path(seed: int) -> list[tuple[int, float, int]]:
    topics = member_inputs_by_rank(TopicNames())
    rows = []
    for size in BATCH_SIZES:
        app, subscription = _caught_up_app(topics)
        lagging = faust_patches.lagging_partitions(app, topics)
        order: CoPartitionedOrder[Message] = CoPartitionedOrder(topics, 1000, lambda m: m)
        batches = _batches(topics, size, MESSAGES_PER_SIZE, seed)
        spent = 0.0
        released = 0
        for at, batch in enumerate(batches):
            _fetched(app, subscription, batch, at)
            started = time.perf_counter()
            released += len(order.release(batch, 0.0, lagging))
            spent += time.perf_counter() - started
        rows.append((size, spent / released * 1e6, order.held))
    return rows


def engine_us_per_transaction() -> float:
    """The engine's own work per transaction, without transport (``bench.pure_path``)."""
    options = BenchOptions(transactions=5_000, members=1_000)
    program = load_program(Settings().program_path)
    return run_pure_path(options, program, Settings().max_event_bytes).us_per_tx


@dataclass(frozen=True)
class LatencyRun:
    idle_ms: int
    pairs: int
    out_of_order: int
    signups: LatencySummary | None
    pair_sales: LatencySummary | None
    other_sales: LatencySummary | None
    order: OrderMetrics


async def _drive(
    settings: Settings, pairs_per_s: int, sales_per_s: int, seconds: float
) -> tuple[dict[str, list[float]], int, int]:
    """Send the workload; return latencies by kind, the pairs sent and those out of order."""
    topics = settings.topics
    bootstrap = settings.kafka_bootstrap
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(topics.rewards, p) for p in range(settings.partitions)])
    await consumer.seek_to_beginning()
    sent: dict[str, tuple[str, float]] = {}
    latencies: dict[str, list[float]] = {"signup": [], "pair sale": [], "other sale": []}
    enrolled_by: dict[str, str] = {}
    expected = 0
    run = f"{time.time_ns() % 10**9}"

    def value(kind: str, member: str, event_id: str, at: datetime) -> bytes:
        if kind == "signup":
            event: dict[str, Any] = {"event_id": event_id, "type": "signup"}
        else:
            event = {
                "transaction_id": event_id,
                "station_id": "station-7",
                "fuel_type": "diesel",
                "liters": 20.0,
                "amount": 30.0,
            }
        return orjson.dumps({**event, "member_id": member, "occurred_at": at.isoformat()})

    async def pair(index: int) -> None:
        member = f"pair-{run}-{index}"
        at = datetime.now(UTC) - timedelta(seconds=10)
        sent[f"{member}-signup"] = ("signup", time.monotonic())
        signup = value("signup", member, f"{member}-signup", at)
        await (await producer.send(topics.members, signup, key=member.encode()))
        sale = value("sale", member, f"{member}-sale", at + timedelta(seconds=1))
        sent[f"{member}-sale"] = ("pair sale", time.monotonic())
        await producer.send(topics.transactions, sale, key=member.encode())

    async def other_sale(index: int) -> None:
        member = f"other-{run}-{index % 500}"
        event_id = f"{member}-{index}"
        sent[event_id] = ("other sale", time.monotonic())
        sale = value("sale", member, event_id, datetime.now(UTC) - timedelta(seconds=5))
        await producer.send(topics.transactions, sale, key=member.encode())

    async def read() -> None:
        while len(latencies["signup"]) + sum(map(len, latencies.values())) >= 0:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    reward = orjson.loads(record.value)
                    source = reward["source_event_id"]
                    kind, at = sent.pop(source, ("", 0.0))
                    if kind:
                        latencies[kind].append(now - at)
                    if reward["enrolled"]:
                        enrolled_by[reward["member_id"]] = source

    reader = asyncio.ensure_future(read())
    tasks = []
    started = time.monotonic()
    pairs = sales = 0
    while (elapsed := time.monotonic() - started) < seconds:
        while pairs < elapsed * pairs_per_s:
            tasks.append(asyncio.ensure_future(pair(pairs)))
            pairs += 1
        while sales < elapsed * sales_per_s:
            tasks.append(asyncio.ensure_future(other_sale(sales)))
            sales += 1
        await asyncio.sleep(0.002)  # pacing interval
    await asyncio.gather(*tasks)
    expected = 2 * pairs + sales
    deadline = time.monotonic() + 60
    while sum(map(len, latencies.values())) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # polling the reader's progress
    reader.cancel()
    await producer.stop()
    await consumer.stop()
    wrong = sum(
        1
        for index in range(pairs)
        if enrolled_by.get(f"pair-{run}-{index}") != f"pair-{run}-{index}-signup"
    )
    return latencies, pairs, wrong


@dataclass(frozen=True)
class OrderMetrics:
    waits: int
    """Waits of a partition's records for another topic's partition (ended)."""
    mean_wait_ms: float
    longest_wait_ms: str
    """The upper bound of the histogram bucket of the longest wait."""
    expired: int


def _order_metrics(worker: WorkerProcess) -> OrderMetrics:
    url = f"http://{worker.settings.web_host}:{worker.settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    values: dict[str, float] = {}
    buckets: list[tuple[str, float]] = []
    for line in lines:
        name, _, number = line.rpartition(" ")
        if name.startswith("loyalty_order_wait_seconds_bucket"):
            bound = name.split('le="')[1].rstrip('"}')
            buckets.append((bound, float(number)))
        elif name.startswith("loyalty_order_"):
            values[name] = float(number)
    waits = int(values.get("loyalty_order_wait_seconds_count", 0))
    total_s = values.get("loyalty_order_wait_seconds_sum", 0.0)
    longest = next((bound for bound, count in buckets if count >= waits), "none")
    return OrderMetrics(
        waits=waits,
        mean_wait_ms=round(total_s / waits * 1000, 2) if waits else 0.0,
        longest_wait_ms="none" if not waits else f"{float(longest) * 1000:g}",
        expired=int(values.get("loyalty_order_waits_expired_total", 0)),
    )


def latency(
    idle_values: tuple[int, ...], pairs_per_s: int, sales_per_s: int, seconds: float
) -> list[LatencyRun]:
    work_dir = Path(tempfile.mkdtemp(prefix="loyalty-ordering-"))
    runs = []
    try:
        status = broker.start(port=broker.free_port(), data_dir=work_dir / "kafka")
        assert status.bootstrap is not None
        bench = Bench(status.bootstrap, work_dir, PARTITIONS)
        # The first worker on a new broker is slower for a while (its figures were several
        # times the later runs'): a warm-up run at the default, not reported.
        plan = [(Settings().max_partition_idle_ms, WARM_UP_S), *((i, seconds) for i in idle_values)]
        for run, (idle_ms, run_seconds) in enumerate(plan):
            settings = replace(bench.settings(f"run-{run}"), max_partition_idle_ms=idle_ms)
            worker = WorkerProcess(settings, work_dir / f"worker-{run}.log").start()
            try:
                worker.wait_ready(assigned=True)
                latencies, pairs, wrong = asyncio.run(
                    _drive(settings, pairs_per_s, sales_per_s, run_seconds)
                )
                if run == 0:
                    continue
                runs.append(
                    LatencyRun(
                        idle_ms,
                        pairs,
                        wrong,
                        summarize(latencies["signup"]),
                        summarize(latencies["pair sale"]),
                        summarize(latencies["other sale"]),
                        _order_metrics(worker),
                    )
                )
            finally:
                worker.stop()
    finally:
        broker.stop(work_dir / "kafka")
        shutil.rmtree(work_dir, ignore_errors=True)
    return runs


def _summary(summary: LatencySummary | None) -> str:
    if summary is None:
        return "none"
    return (
        f"p50 {summary.p50_ms:7.1f}  p95 {summary.p95_ms:7.1f}  p99 {summary.p99_ms:7.1f}  "
        f"max {summary.max_ms:7.1f} ms  (n={summary.count})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loyalty.bench.ordering", description=__doc__)
    parser.add_argument("--broker", action="store_true", help="also measure the latency")
    parser.add_argument("--pairs", type=int, default=50, help="signup+sale pairs per second")
    parser.add_argument("--sales", type=int, default=200, help="other sales per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--idle",
        default=f"{Settings().max_partition_idle_ms},0",
        help="LOYALTY_MAX_PARTITION_IDLE_MS of each run, comma-separated (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    engine_us = engine_us_per_transaction()
    print(f"engine's own work per transaction (pure path): {engine_us:.1f} us")
    print("ordering step, every partition caught up:")
    for size, us, held in hot_path():
        share = us / engine_us * 100
        print(f"  batches of {size:5d}: {us:6.2f} us/message ({share:4.1f}% of it), held {held}")
    if args.broker:
        print(f"latency: {args.pairs} pairs/s and {args.sales} other sales/s for {args.seconds}s")
        idle_values = tuple(int(value) for value in args.idle.split(","))
        for run in latency(idle_values, args.pairs, args.sales, args.seconds):
            order = run.order
            print(
                f"  LOYALTY_MAX_PARTITION_IDLE_MS={run.idle_ms}: {run.out_of_order} of "
                f"{run.pairs} members' sale applied before their signup; {order.waits} waits, "
                f"mean {order.mean_wait_ms} ms, longest <= {order.longest_wait_ms} ms, "
                f"{order.expired} ran out"
            )
            print(f"    signup      {_summary(run.signups)}")
            print(f"    pair sale   {_summary(run.pair_sales)}")
            print(f"    other sale  {_summary(run.other_sales)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
