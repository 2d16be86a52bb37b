"""What every phase shares: the broker address, isolated settings, workers and their memory."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from loyalty.bench.clients import OffsetWatcher, RewardWaiter, send_one
from loyalty.demo.worker_process import WorkerProcess
from loyalty.localkafka.broker import KAFKA_VERSION, free_port
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.settings import Settings, TopicNames
from loyalty.streams.topics import TABLE_NAMES, changelog_topic_name, ensure_topics


def bench_settings(bootstrap: str, data_dir: Path, partitions: int) -> Settings:
    """Settings whose topics, consumer group and state belong to one benchmark run only
    (like ``tests/integration/harness.isolated_settings``)."""
    run = f"b{uuid.uuid4().hex[:8]}"
    defaults = TopicNames()
    topics = TopicNames(
        **{name: f"{run}.{getattr(defaults, name)}" for name in TopicNames.__dataclass_fields__}
    )
    return Settings(
        kafka_bootstrap=bootstrap,
        data_dir=data_dir,
        web_port=free_port(),
        app_id=f"loyalty-{run}",
        partitions=partitions,
        topics=topics,
        log_level="warn",
        daily_cron="",
    )


@dataclass(frozen=True)
class Memory:
    peak_mb: float
    """VmHWM: the process's peak resident set so far."""
    rss_mb: float
    """VmRSS: its resident set now."""


def process_memory(pid: int) -> Memory:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = round(int(rest.split()[0]) / 1024, 1)  # kB -> MB
    return Memory(peak_mb=values["VmHWM"], rss_mb=values["VmRSS"])


@dataclass
class Bench:
    """The run: broker address, scratch directory, and the worker memory seen so far."""

    bootstrap: str
    work_dir: Path
    partitions: int
    memory: dict[str, Memory] = field(default_factory=dict)
    """Worker memory at the end of each phase, by phase name."""
    _workers: int = 0

    def settings(self, name: str) -> Settings:
        """Settings of a new app, whose topics exist (table changelogs included)."""
        settings = bench_settings(self.bootstrap, self.work_dir / name / "state", self.partitions)
        ensure_topics(settings)
        changelogs = [changelog_topic_name(settings.app_id, table) for table in TABLE_NAMES]
        watcher = OffsetWatcher(self.bootstrap)
        try:  # wait until the new topics are usable: producing at once fails otherwise
            for topic in [*settings.topics.__dict__.values(), *changelogs]:
                watcher.end_offsets(topic)
        finally:
            watcher.close()
        return settings

    def worker(self, settings: Settings, data_dir: Path | None = None) -> BenchWorker:
        self._workers += 1
        if data_dir is not None:
            settings = replace(settings, data_dir=data_dir)
        settings.data_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes one level
        log = self.work_dir / "logs" / f"worker-{self._workers}.log"
        return BenchWorker(WorkerProcess(settings, log))

    def record_memory(self, phase: str, worker: BenchWorker) -> Memory:
        memory = worker.memory()
        self.memory[phase] = memory
        return memory

    def time_to_probe(self, worker: BenchWorker, timeout: float = 600.0) -> float:
        """Start ``worker``, send one sale for a new member at once, and return the seconds
        from the process start to that sale's reward event."""
        settings = worker.settings
        waiter = self._reward_waiter(settings)
        probe = probe_sale()
        try:
            started = worker.start()
            send_one(self.bootstrap, settings.topics.transactions, probe)
            observed = waiter.wait(probe["transaction_id"], timeout, lambda: worker.alive)
        except (RuntimeError, TimeoutError) as error:
            raise failure(error, [worker]) from None
        finally:
            waiter.close()
        return observed - started

    def wait_all_partitions(
        self, settings: Settings, alive: Callable[[], bool], timeout: float = 120.0
    ) -> None:
        """Send a probe sale to each partition in turn and wait for its reward event: once
        all are back, the owner of every partition has its tables and processes."""
        waiter = self._reward_waiter(settings)
        try:
            for probe in partition_probes(settings.partitions):
                send_one(self.bootstrap, settings.topics.transactions, probe)
                waiter.wait(probe["transaction_id"], timeout, alive)
        finally:
            waiter.close()

    def _reward_waiter(self, settings: Settings) -> RewardWaiter:
        """A waiter for the reward events appended from now on."""
        watcher = OffsetWatcher(self.bootstrap)
        try:
            start = watcher.end_offsets(settings.topics.rewards)
        finally:
            watcher.close()
        return RewardWaiter(self.bootstrap, settings.topics.rewards, start)


class BenchWorker:
    """A worker child process, timed from its start."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process
        self.settings = process.settings

    def start(self) -> float:
        """Start the process; return ``time.monotonic()`` just before."""
        started = time.monotonic()
        self.process.start()
        return started

    @property
    def alive(self) -> bool:
        return self.process.alive

    @property
    def pid(self) -> int:
        assert self.process.process is not None, "worker not started"
        return self.process.process.pid

    def memory(self) -> Memory:
        return process_memory(self.pid)

    def stop(self) -> None:
        code = self.process.stop(signal.SIGTERM, timeout=60.0)
        if code not in (0, -signal.SIGTERM):
            print(f"  (worker exited with code {code}; log: {self.process.log_path})")

    def log_tail(self) -> str:
        return self.process.log_tail()


def failure(error: Exception, workers: list[BenchWorker]) -> RuntimeError:
    """``error`` with the log tail of each worker."""
    tails = "\n".join(worker.log_tail() for worker in workers)
    return RuntimeError(f"{error}; worker log tail:\n{tails}")


def partition_probes(partitions: int) -> list[dict[str, Any]]:
    """Probe sales whose members are owned by partitions 0, 1, ... in this order."""
    probes: dict[int, dict[str, Any]] = {}
    while len(probes) < partitions:
        probe = probe_sale()
        probes.setdefault(owner_partition(probe["member_id"].encode(), partitions), probe)
    return [probes[partition] for partition in range(partitions)]


def probe_sale() -> dict[str, Any]:
    """A 20-litre sale, now, by a member never seen before."""
    tag = uuid.uuid4().hex[:12]
    return {
        "transaction_id": f"bench-probe-{tag}",
        "member_id": f"probe-{tag}",
        "station_id": "station-probe",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "type": "sale",
        "fuel_type": "diesel",
        "liters": 20.0,
        "amount": 30.4,
    }


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    memory_mb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": memory_mb,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "kafka": KAFKA_VERSION,
        "faust_streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    """The checked-out commit, with ``+dirty`` when the working tree has changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{commit}+dirty" if commit and dirty else commit or None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
