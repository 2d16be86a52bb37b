"""The benchmark from start to end: broker, phases in order, table and JSON."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from loyalty.bench.baseline import run_baseline
from loyalty.bench.cluster import Bench, machine_info
from loyalty.bench.faust_floor import run_faust_floor
from loyalty.bench.latency import run_load
from loyalty.bench.options import BenchOptions
from loyalty.bench.preload import run_preload
from loyalty.bench.pure_path import run_pure_path
from loyalty.bench.recovery import run_recovery
from loyalty.bench.report import Results, format_table, rows, write_json
from loyalty.bench.scale import run_scale
from loyalty.bench.stats import ratio
from loyalty.bench.throughput import run_throughput
from loyalty.core.program import load_program
from loyalty.localkafka import broker

DRAIN_MARGIN_S = 30.0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_bench(options: BenchOptions, keep: Path | None = None) -> int:
    """Run every phase and print as each completes; ``keep``: a directory for the broker
    data and worker logs that is left in place (default: a temporary one, removed)."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    began = time.monotonic()
    work_dir = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="loyalty-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    kafka_dir = work_dir / "kafka"
    machine = machine_info()
    # SIGTERM (e.g. `kill`) unwinds like Ctrl-C: every phase stops its workers in a
    # `finally`, so none is left behind spinning against the stopped broker.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(
        f"loyalty bench: {machine['nproc']} cores, Python {machine['python']}, "
        f"Kafka {machine['kafka']}; work dir {work_dir}",
        flush=True,
    )
    try:
        status = broker.start(port=broker.free_port(), data_dir=kafka_dir)
        assert status.bootstrap is not None
        bench = Bench(status.bootstrap, work_dir, options.partitions)
        print(f"broker {status.bootstrap} up after {time.monotonic() - began:.1f}s", flush=True)
        results = _phases(bench, options, started_at, began, machine)
    finally:
        broker.stop(kafka_dir)
        if keep is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print()
    print(format_table(rows(results)))
    write_json(results, options.out)
    print(f"\nfigures written to {options.out} ({results.duration_s:.0f}s in all)")
    return 0


def _phases(
    bench: Bench,
    options: BenchOptions,
    started_at: str,
    began: float,
    machine: dict[str, object],
) -> Results:
    settings = bench.settings("engine")

    pure = run_pure_path(options, load_program(settings.program_path), settings.max_event_bytes)
    print(
        f"[0/8] pure path: {pure.tx_per_s:,.0f} tx/s ({pure.us_per_tx} us per transaction: decode, "
        f"rules, outputs rendered and serialised, state encoded; no Kafka; mean state "
        f"{pure.mean_state_bytes} bytes)",
        flush=True,
    )

    preloaded = run_preload(bench, options, settings)
    preload = preloaded.result
    print(
        f"[1/8] preload: {preload.transactions:,} transactions over {preload.members:,} members "
        f"({preload.coupons_issued:,} newsletter coupons issued by the engine) produced in "
        f"{preload.produce_seconds:.1f}s; mix {preload.mix}",
        flush=True,
    )

    throughput, worker = run_throughput(bench, settings, preload.transactions)
    print(
        f"[2/8] throughput: {throughput.tx_per_s:,.0f} tx/s ({throughput.transactions:,} in "
        f"{throughput.seconds:.1f}s first to last output; {throughput.dead_letters} dead letters); "
        f"outcomes {throughput.outcomes}",
        flush=True,
    )

    loads = []
    try:
        for offered in options.loads:
            backlog_s = offered * options.load_seconds / max(throughput.tx_per_s, 50.0)
            load = run_load(
                bench.bootstrap,
                settings,
                preloaded.generator,
                offered,
                options.load_seconds,
                drain_timeout=DRAIN_MARGIN_S + 1.5 * backlog_s,
            )
            loads.append(load)
            summary = load.latency
            figures = (
                f"p50 {summary.p50_ms:.0f} ms, p95 {summary.p95_ms:.0f} ms, "
                f"p99 {summary.p99_ms:.0f} ms, max {summary.max_ms:.0f} ms"
                if summary
                else "no reward event observed"
            )
            print(
                f"[3/8] latency @ {offered:,}/s: sent {load.sent:,} at "
                f"{load.achieved_per_s:,.0f}/s; {figures}; {load.missing:,} not observed",
                flush=True,
            )
        bench.record_memory("latency", worker)
    finally:
        worker.stop()

    baseline = run_baseline(bench.bootstrap, settings, preloaded.end_offsets)
    print(
        f"[4/8] baseline: {baseline.msg_per_s:,.0f} msg/s (aiokafka consume + orjson + produce); "
        f"engine = {_times(throughput.tx_per_s, baseline.msg_per_s)} x baseline",
        flush=True,
    )

    floor = run_faust_floor(bench, settings, preloaded.end_offsets)
    print(
        f"[5/8] faust floor: {floor.msg_per_s:,.0f} msg/s (Faust agent: parse + produce one "
        f"message per input; engine = {_times(throughput.tx_per_s, floor.msg_per_s)} x floor)",
        flush=True,
    )

    scale = None
    if options.scale:
        scale = run_scale(bench, settings, preloaded.end_offsets)
        one, two = scale.one_worker, scale.two_workers
        same = one.outcomes == two.outcomes == throughput.outcomes
        print(
            f"[6/8] scale-out: 1 worker {one.tx_per_s:,.0f} tx/s, 2 workers {two.tx_per_s:,.0f} "
            f"tx/s, ratio {scale.ratio} ({one.seconds:.1f}s and {two.seconds:.1f}s first to "
            f"last output; {one.dead_letters + two.dead_letters} dead letters; outcomes "
            f"{'as in' if same else 'DIFFER from'} phase 2)",
            flush=True,
        )

    recovery = None
    if options.recovery_members:
        recovery = run_recovery(bench, options.recovery_members, options.seed)
        print(
            f"[7/8] recovery: {recovery.members:,} members rebuilt in "
            f"{recovery.cold_rebuild_s:.1f}s "
            f"({recovery.cold_s_per_million} s per million; start {recovery.cold_start_s:.1f}s vs "
            f"{recovery.empty_start_s:.1f}s empty); warm restart {recovery.warm_restart_s:.1f}s",
            flush=True,
        )
    memory = bench.memory
    print(
        "[8/8] worker memory (VmHWM / VmRSS, MB): "
        + ", ".join(f"{phase} {m.peak_mb:.0f}/{m.rss_mb:.0f}" for phase, m in memory.items()),
        flush=True,
    )
    return Results(
        started_at=started_at,
        duration_s=round(time.monotonic() - began, 1),
        options={**dataclasses.asdict(options), "out": str(options.out)},
        machine=machine,
        preload=preload,
        throughput=throughput,
        latency=loads,
        baseline=baseline,
        pure_path=pure,
        faust_floor=floor,
        scale=scale,
        recovery=recovery,
        worker_memory=dict(memory),
    )


def _times(numerator: float, denominator: float) -> str:
    share = ratio(numerator, denominator)
    return "n/a" if share is None else f"{share:.3f}"
