"""``loyalty demo``: a local broker, a worker and a POS simulator, with rewards printed live.

The example catalog (``program/catalog.toml``) is published at the start; once members have
points, one send in ``REDEMPTION_EVERY`` is a redemption request for one of its rewards.

Everything runs on this machine: the broker from ``localkafka``, the worker as a child
process (``loyalty worker``), and this process as both the POS (producer) and a downstream
service (consumer of ``loyalty.rewards``, ``loyalty.segments`` and ``loyalty.deadletter``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer

from loyalty.demo.pos import PosSimulator
from loyalty.demo.worker_process import WorkerProcess
from loyalty.localkafka import broker
from loyalty.schemas.catalog import load_catalog_file
from loyalty.streams.settings import PROGRAM_DIR, from_env
from loyalty.streams.topics import ensure_topics, publish_catalog

LOCAL = Path(".local")
EXAMPLE_CATALOG = PROGRAM_DIR / "catalog.toml"
REDEMPTION_EVERY = 8
"""One send in this many is a redemption request (after the first ``REDEMPTION_EVERY * 4``
sales, so that members have points)."""


def _describe(reward: dict, latency_ms: float | None) -> str:
    parts = []
    breakdown = reward.get("breakdown") or {}
    redemption = reward.get("redemption")
    if redemption:
        outcome = redemption["status"] + (
            f" ({redemption['reason']})" if redemption["reason"] else ""
        )
        parts.append(f"{reward['points']:+d} redeem {redemption['reward_id']}: {outcome}")
    elif breakdown:
        multipliers = "".join(f" x{m['factor']:g} {m['name']}" for m in breakdown["multipliers"])
        parts.append(f"+{breakdown['fuel_points']} fuel ({breakdown['liters']:g} L{multipliers})")
        parts += [f"+{bonus['points']} {bonus['reason']}" for bonus in breakdown["bonuses"]]
    else:
        parts.append(f"{reward['points']:+d} {reward['source_type']}")
    latency = "" if latency_ms is None else f"  [{latency_ms:5.0f} ms]"
    return (
        f"{reward['processed_at'][11:23]}  {reward['member_id']:<14} {reward['station_id']:<12}"
        f" {'  '.join(parts):<46} balance {reward['balance_after']:>6}{latency}"
    )


def _latency_summary(latencies_ms: list[float]) -> str:
    ordered = sorted(latencies_ms)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"\n{len(ordered)} rewards; POS send -> reward received: p50 {quantile(0.5):.0f} ms, "
        f"p95 {quantile(0.95):.0f} ms, max {ordered[-1]:.0f} ms"
    )


def run_demo(port: int = 9092, rate: float = 5.0, duration: float = 0) -> int:
    """Run until Ctrl-C (or ``duration`` seconds); return the exit code."""
    kafka_dir = LOCAL / "kafka"
    was_running = broker.status(kafka_dir).running
    print("Starting the local Kafka broker..." if not was_running else "Kafka already running.")
    started = time.monotonic()
    status = broker.start(port=port, data_dir=kafka_dir)
    print(f"Kafka ready at {status.bootstrap} ({time.monotonic() - started:.1f} s)")

    settings = replace(
        from_env(),
        kafka_bootstrap=status.bootstrap or f"127.0.0.1:{port}",
        data_dir=LOCAL / "demo-state",
        log_level="warn",
    )
    ensure_topics(settings)
    rewards = load_catalog_file(EXAMPLE_CATALOG)
    publish_catalog(settings, rewards)
    reward_ids = [reward.reward_id for reward in rewards if reward.active]
    print(f"Catalog published: {', '.join(reward_ids)}")
    worker = WorkerProcess(settings, LOCAL / "demo-worker.log").start()
    print(
        f"Worker starting (log: {worker.log_path}, metrics: "
        f"http://{settings.web_host}:{settings.web_port}/metrics)"
    )

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    consumer = KafkaConsumer(
        settings.topics.rewards,
        settings.topics.segments,
        settings.topics.deadletter,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="latest",
        group_id=None,
    )
    consumer.poll(timeout_ms=1000)  # join the topics before the first sale is sent
    simulator = PosSimulator(seed=int(time.time()))
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    interval = 1.0 / rate
    sends = 0
    next_send = time.monotonic()
    end = time.monotonic() + duration if duration > 0 else float("inf")
    print(f"POS simulator sending {rate:g} sales/s. Ctrl-C to stop.\n")
    try:
        while time.monotonic() < end:
            if not worker.alive:
                print(f"worker exited:\n{worker.log_tail()}")
                return 1
            now = time.monotonic()
            if now >= next_send:
                sends += 1
                if sends > REDEMPTION_EVERY * 4 and sends % REDEMPTION_EVERY == 0:
                    request = simulator.redemption(datetime.now(UTC), reward_ids)
                    sent_at[str(request["request_id"])] = time.time()
                    topic, key = settings.topics.redemptions, str(request["request_id"])
                    value = orjson.dumps(request)
                else:
                    sale = simulator.transaction(datetime.now(UTC))
                    sent_at[str(sale["transaction_id"])] = time.time()
                    topic, key = settings.topics.transactions, str(sale["member_id"])
                    value = orjson.dumps(sale)
                producer.send(topic, key=key.encode(), value=value)
                producer.flush()
                next_send += interval
            timeout_ms = max(1, int((next_send - time.monotonic()) * 1000))
            for batch in consumer.poll(timeout_ms=timeout_ms).values():
                for record in batch:
                    event = orjson.loads(record.value)
                    if record.topic == settings.topics.deadletter:
                        print(f"DEAD LETTER {event['reason']}: {event['message']}")
                        continue
                    if record.topic == settings.topics.segments:
                        print(
                            f"{'':14}{event['member_id']:<14} {event['change']} {event['segment']}"
                        )
                        continue
                    sent = sent_at.pop(event["source_event_id"], None)
                    latency = None if sent is None else (time.time() - sent) * 1000
                    if latency is not None:
                        latencies.append(latency)
                    print(_describe(event, latency))
    except KeyboardInterrupt:
        pass
    finally:
        if latencies:
            print(_latency_summary(latencies))
        producer.close()
        consumer.close()
        worker.stop()
        if not was_running:
            broker.stop(kafka_dir)
    return 0
