"""Phase 5: the Faust floor, the baseline's work done by a bare Faust agent.

A minimal Faust app (no tables, ``memory://`` store, raw keys and values, web server off),
in a child process and a consumer group of its own, reads the N preloaded transactions;
for each event its one agent parses the value and produces one small message to a scratch
topic with ``await topic.send(...)``, exactly the baseline's work per input
(:func:`bench.baseline.scratch_value`), with the engine's producer settings (acks=all,
1 ms linger). What separates it from the baseline is Faust's per-message path: fetcher,
per-partition queues, ``Event``, stream iteration, acks, ``Topic.send``; and, as the agent
yields to the event loop on every event, the producer's sender runs between sends and the
outputs leave in batches of one or two records (the baseline's hold a few hundred: counted
in the scratch topics' log segments, 50,000 messages). No engine worker runs meanwhile.
Timed like the baseline: N over the time from the first input the agent sees to the Kafka
timestamp of the last output; the agent writes the wall time of that first input to a file.

Run by the bench as ``python -m loyalty.bench.faust_floor SCRATCH STOP FIRST_INPUT_FILE`` with the
app's settings in the ``LOYALTY_*`` variables (:func:`streams.settings.from_env`); it runs
until SIGTERM, like a worker.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import faust
from faust.worker import Worker

from loyalty.bench.baseline import BaselineResult, scratch_value, timed_to_last_output
from loyalty.bench.clients import Offsets, OffsetWatcher, count_since, create_topic, wait_for_count
from loyalty.bench.cluster import Bench, BenchWorker, failure
from loyalty.demo.worker_process import WorkerProcess
from loyalty.streams.settings import Settings, from_env, to_env

STALL_TIMEOUT_S = 120.0
"""Give up when no output appears for this long (covers the app's start)."""


def run_faust_floor(bench: Bench, settings: Settings, stop: Offsets) -> BaselineResult:
    """Process the transactions topic of ``settings`` up to the ``stop`` end offsets (the
    preload) with the floor app; its figures are shaped like the baseline's."""
    name = "faust-floor"
    floor = replace(
        settings, app_id=f"{settings.app_id}-{name}", data_dir=bench.work_dir / name / "state"
    )
    scratch = f"{settings.app_id}.bench.{name}"
    create_topic(bench.bootstrap, scratch, settings.partitions)
    first_input_file = bench.work_dir / name / "first-input"
    first_input_file.unlink(missing_ok=True)  # a kept work dir may hold an earlier run's
    floor.data_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes one level
    log = bench.work_dir / "logs" / f"{name}.log"
    argv = [scratch, format_offsets(stop), str(first_input_file)]
    worker = BenchWorker(FloorProcess(floor, log, argv))
    count = count_since({}, stop)
    watcher = OffsetWatcher(bench.bootstrap)
    try:
        start = {scratch: watcher.end_offsets(scratch)}
        worker.start()
        wait_for_count(
            watcher, start, count, STALL_TIMEOUT_S, alive=lambda: worker.alive, what=name
        )
    except (RuntimeError, TimeoutError) as error:
        raise failure(error, [worker]) from None
    finally:
        watcher.close()
        worker.stop()
    first_input = float(first_input_file.read_text())
    return timed_to_last_output(bench.bootstrap, scratch, count, first_input)


class FloorProcess(WorkerProcess):
    """``python -m loyalty.bench.faust_floor ARGV...`` in place of ``loyalty worker``: the same
    environment, log, liveness and stop."""

    def __init__(self, settings: Settings, log_path: Path, argv: list[str]) -> None:
        super().__init__(settings, log_path)
        self.argv = argv

    def start(self) -> FloorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "loyalty.bench.faust_floor", *self.argv],
                env={**os.environ, **to_env(self.settings), "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self


def format_offsets(offsets: Offsets) -> str:
    """``{0: 12, 1: 7}`` -> ``"0:12,1:7"``: the stop offsets on the child's command line."""
    return ",".join(f"{partition}:{offset}" for partition, offset in sorted(offsets.items()))


def parse_offsets(text: str) -> Offsets:
    """The inverse of :func:`format_offsets`."""
    pairs = (part.split(":") for part in text.split(",") if part)
    return {int(partition): int(offset) for partition, offset in pairs}


def create_floor_app(
    settings: Settings, scratch: str, stop: Offsets, first_input_file: Path
) -> faust.App:
    """The floor app: one agent, the baseline's work per event, nothing else."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # The engine's producer settings (streams/app.py: producer_acks=-1,
        # producer_linger_ms=1), so that only the per-message path differs.
        producer_acks=-1,
        producer_linger=0.001,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        autodiscover=False,
    )
    transactions_topic = app.topic(settings.topics.transactions, key_type=bytes, value_type=bytes)
    scratch_topic = app.topic(scratch, key_type=bytes, value_type=bytes)

    @app.agent(transactions_topic)
    async def parse_and_produce(stream: faust.StreamT[bytes]) -> None:
        first_seen = False
        async for event in stream.events():
            message = event.message
            if message.offset >= stop.get(message.partition, 0):
                continue  # sent after the preload (the latency phase): not counted
            if not first_seen:
                first_seen = True
                first_input_file.write_text(repr(time.time()))
            await scratch_topic.send(key=event.key, value=scratch_value(event.value))

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loyalty.bench.faust_floor", description=__doc__.partition("\n")[0]
    )
    parser.add_argument("scratch", help="topic the outputs go to")
    parser.add_argument("stop", help="end offsets to process up to: partition:offset,...")
    parser.add_argument("first_input_file", help="receives the wall time of the first input")
    args = parser.parse_args(argv)
    settings = from_env()
    app = create_floor_app(
        settings, args.scratch, parse_offsets(args.stop), Path(args.first_input_file)
    )
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    worker.spinner = None  # as in ``loyalty worker``: the spinner logs every record
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
