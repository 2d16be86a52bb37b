"""A worker's life on the real broker: readiness follows the assignment, SIGTERM is honoured
in every state (running, recovering tables, broker unreachable, past the grace), a crashed
agent ends the process, state at rest is the worker's user's alone (``cli.worker``,
``agents.health``)."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import replace

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from loyalty.cli.worker import EXIT_CRASHED, EXIT_FORCED, EXIT_OK
from loyalty.demo.worker_process import WorkerProcess
from loyalty.localkafka.broker import free_port
from loyalty.streams.topics import changelog_topic_name, ensure_topics
from tests.integration.harness import TopicReader, isolated_settings, produce, wait_for_group

SIGTERM_DEADLINE_S = 10.0


def sale(transaction_id: str, member_id: str) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": transaction_id,
            "member_id": member_id,
            "station_id": "station-1",
            "occurred_at": "2026-11-02T09:15:00+01:00",
            "fuel_type": "diesel",
            "liters": 30,
            "amount": 49.5,
        }
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # polling interval, not synchronisation


def exit_status(worker: WorkerProcess, timeout: float) -> int | None:
    """The worker's exit status once it exits within ``timeout`` s, else None."""
    assert worker.process is not None
    deadline = time.monotonic() + timeout
    while worker.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval, not synchronisation
    return worker.process.poll()


def sigterm(worker: WorkerProcess) -> tuple[int | None, float]:
    """SIGTERM ``worker``; its exit status within the deadline (None: still running), and
    how long it took."""
    assert worker.process is not None
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    status = exit_status(worker, SIGTERM_DEADLINE_S)
    return status, time.monotonic() - started


def readiness(worker: WorkerProcess) -> tuple[int | None, dict]:
    status, body = worker.health("/health/ready")
    return status, orjson.loads(body) if body else {}


def test_readiness_follows_the_assignment_and_sigterm_stops_a_worker_cleanly(
    kafka_bootstrap, tmp_path
):
    # One partition for two workers: one holds it, the other is a spare until it leaves.
    settings = isolated_settings(kafka_bootstrap, tmp_path, partitions=1)
    ensure_topics(settings)
    workers = [
        WorkerProcess(
            replace(settings, data_dir=tmp_path / f"state-{n}", web_port=free_port()),
            tmp_path / f"worker-{n}.log",
        ).start()
        for n in (1, 2)
    ]
    try:
        for worker in workers:
            worker.wait_ready()
            assert worker.health("/health/live")[0] == 200
        wait_for_group(kafka_bootstrap, settings.app_id, members=2, timeout=60)
        roles: list[tuple[WorkerProcess, WorkerProcess]] = []

        def one_holder_one_spare() -> bool:
            answers = [readiness(worker) for worker in workers]
            ready = [w for w, (status, _) in zip(workers, answers, strict=True) if status == 200]
            spare = [
                w
                for w, (status, body) in zip(workers, answers, strict=True)
                if status == 503 and body["failing"] == ["partitions_assigned"]
            ]
            roles[:] = [(ready[0], spare[0])] if len(ready) == len(spare) == 1 else []
            return bool(roles)

        wait_until(one_holder_one_spare, timeout=60, what="one worker ready, a spare not")
        holder, spare = roles[0]
        assert readiness(spare)[1] == {
            "status": "not_ready",
            "failing": ["partitions_assigned"],
            "member_partitions": 0,
        }
        assert readiness(holder)[1] == {
            "status": "ready",
            "failing": [],
            "member_partitions": 6,  # partition 0 of the six member input topics
        }

        code, took = sigterm(holder)
        assert code == EXIT_OK, f"exit {code} after {took:.1f}s:\n{holder.log_tail()}"
        wait_until(lambda: readiness(spare)[0] == 200, timeout=60, what="the spare to take over")
        assert spare.health("/health/live")[0] == 200
    finally:
        for worker in workers:
            worker.stop()


def test_sigterm_while_the_broker_is_unreachable(tmp_path):
    nothing_listens = f"127.0.0.1:{free_port()}"
    settings = isolated_settings(nothing_listens, tmp_path)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        # The data directory is made just before the worker checks its topics, which waits
        # 30 s for a broker before giving up.
        wait_until(settings.data_dir.exists, timeout=60, what="the worker to reach the broker")
        code, took = sigterm(worker)
        assert code == EXIT_OK, f"exit {code} after {took:.1f}s:\n{worker.log_tail()}"
        assert "SIGTERM received before the worker started" in worker.log_tail()
    finally:
        worker.stop()


def test_a_crashed_agent_ends_the_worker(kafka_bootstrap, tmp_path):
    settings = isolated_settings(kafka_bootstrap, tmp_path)
    ensure_topics(settings)
    # A broker-side fault: the member table's changelog refuses every record, so the account
    # agent's commit fails and the agent crashes the worker (agents.batching).
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        changelog = changelog_topic_name(settings.app_id, "member_to_state")
        tiny = ConfigResource(ConfigResourceType.TOPIC, changelog, {"max.message.bytes": "64"})
        assert admin.alter_configs([tiny])["topic"][changelog] == "OK"
    finally:
        admin.close()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(assigned=True)
        produce(kafka_bootstrap, settings.topics.transactions, [(b"m-1", sale("t-1", "m-1"))])
        code = exit_status(worker, timeout=60)
        log = worker.log_path.read_text(errors="replace")
        assert code == EXIT_CRASHED, f"exit {code}:\n{worker.log_tail()}"
        assert "worker crashed: MessageSizeTooLargeError" in log
        assert "exiting now" not in log  # it stopped by itself, the deadline was not needed
    finally:
        worker.stop()


def test_state_at_rest_is_private_and_a_slow_stop_is_forced(kafka_bootstrap, tmp_path):
    # A grace shorter than any clean stop (Faust's alone waits a second for its tasks).
    settings = replace(isolated_settings(kafka_bootstrap, tmp_path), shutdown_grace_s=0.2)
    settings.data_dir.mkdir(mode=0o755)
    os.chmod(settings.data_dir, 0o755)  # as an earlier version left it
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    reader = TopicReader(kafka_bootstrap, settings.topics.rewards)
    try:
        worker.wait_ready(assigned=True)
        produce(
            kafka_bootstrap,
            settings.topics.transactions,
            [(f"m-{n}".encode(), sale(f"t-{n}", f"m-{n}")) for n in range(20)],
        )
        reader.wait_for(lambda r: len(r.values(settings.topics.rewards)) >= 20, 60, "rewards")

        tables = settings.data_dir / "v1" / "tables"
        databases = [path for path in tables.iterdir() if path.name.startswith("member_to_state")]
        assert any(path.is_dir() and any(path.iterdir()) for path in databases), databases
        modes = {
            path: stat.S_IMODE(os.stat(path).st_mode)
            for path in [settings.data_dir, *settings.data_dir.rglob("*")]
        }
        loose = {
            str(path): oct(mode)
            for path, mode in modes.items()
            if mode != (0o700 if path.is_dir() else 0o600)
        }
        assert loose == {}
        assert sum(1 for path in modes if path.is_file()) > 10

        code, took = sigterm(worker)
        assert code == EXIT_FORCED, f"exit {code} after {took:.1f}s:\n{worker.log_tail()}"
        assert took < 5
        assert "after SIGTERM: exiting now (status 3)" in worker.log_tail()
    finally:
        reader.close()
        worker.stop()


RECOVERED_RECORDS = 300_000


def test_sigterm_while_tables_are_recovering(kafka_bootstrap, tmp_path):
    settings = isolated_settings(kafka_bootstrap, tmp_path, partitions=1)
    ensure_topics(settings)
    # A changelog long enough for its recovery to be seen (seconds): raw bytes, as the
    # worker writes them to RocksDB without decoding them until a member is read.
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, linger_ms=50, batch_size=1 << 20, acks=1
    )
    changelog = changelog_topic_name(settings.app_id, "member_to_state")
    for number in range(RECOVERED_RECORDS):
        producer.send(changelog, key=b"member-%07d" % number, value=b"x" * 40, partition=0)
    producer.flush()
    producer.close()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        wait_until(
            lambda: readiness(worker)[1].get("failing") == ["tables_recovered"],
            timeout=60,
            what="the worker recovering its assigned partitions",
        )
        code, took = sigterm(worker)
        assert code == EXIT_OK, f"exit {code} after {took:.1f}s:\n{worker.log_tail()}"
    finally:
        worker.stop()
