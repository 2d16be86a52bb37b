"""The final table and the JSON file. Targets are those of the performance issue."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loyalty.bench.baseline import BaselineResult
from loyalty.bench.cluster import Memory
from loyalty.bench.latency import LoadResult
from loyalty.bench.preload import PreloadResult
from loyalty.bench.pure_path import PurePathResult
from loyalty.bench.recovery import RecoveryResult
from loyalty.bench.scale import ScaleResult
from loyalty.bench.stats import ratio
from loyalty.bench.throughput import ThroughputResult

P99_TARGET_MS = {1_000: 50.0, 5_000: 250.0}


@dataclass(frozen=True)
class Results:
    started_at: str
    duration_s: float
    options: dict[str, Any]
    machine: dict[str, Any]
    preload: PreloadResult
    throughput: ThroughputResult
    latency: list[LoadResult]
    baseline: BaselineResult
    pure_path: PurePathResult
    """The program's rules alone, in one process: the ceiling of one core."""
    faust_floor: BaselineResult
    """The baseline's work through a bare Faust agent: the ceiling Faust's per-message path
    leaves the engine."""
    scale: ScaleResult | None
    recovery: RecoveryResult | None
    worker_memory: dict[str, Memory]
    """Worker VmHWM / VmRSS at the end of each phase."""

    @property
    def engine_vs_baseline(self) -> float | None:
        return ratio(self.throughput.tx_per_s, self.baseline.msg_per_s)

    @property
    def engine_vs_faust_floor(self) -> float | None:
        return ratio(self.throughput.tx_per_s, self.faust_floor.msg_per_s)

    @property
    def peak_rss_mb(self) -> float:
        return max((memory.peak_mb for memory in self.worker_memory.values()), default=0.0)


Row = tuple[str, str, str, str]
"""metric, value, target, verdict ("ok", "MISS" or "")."""


def _row(
    metric: str,
    value: float | None,
    unit: str,
    target: float | None = None,
    higher: bool = False,
    digits: int = 1,
) -> Row:
    if value is None:
        return metric, "n/a", "", ""
    text = f"{value:,.{digits}f}" + (f" {unit}" if unit else "")
    if target is None:
        return metric, text, "", ""
    met = value >= target if higher else value <= target
    bound = ">=" if higher else "<="
    return metric, text, f"{bound} {target:,.{digits}f}", "ok" if met else "MISS"


def rows(results: Results) -> list[Row]:
    throughput, baseline, recovery = results.throughput, results.baseline, results.recovery
    table = [
        _row("throughput, one worker", throughput.tx_per_s, "tx/s", 10_000, True, digits=0),
        _row("raw aiokafka baseline", baseline.msg_per_s, "msg/s", digits=0),
        _row("engine / baseline", results.engine_vs_baseline, "", 1 / 3, True, digits=3),
        _row("Faust floor (bare agent)", results.faust_floor.msg_per_s, "msg/s", digits=0),
        _row("engine / Faust floor", results.engine_vs_faust_floor, "", digits=3),
        _row("pure path (rules alone, 1 core)", results.pure_path.tx_per_s, "tx/s", digits=0),
    ]
    if results.scale is not None:
        scale = results.scale
        table += [
            _row("scale-out: 1 worker", scale.one_worker.tx_per_s, "tx/s", digits=0),
            _row("scale-out: 2 workers", scale.two_workers.tx_per_s, "tx/s", digits=0),
            _row("scale-out: 2 workers / 1", scale.ratio, "", digits=2),
        ]
    for load in results.latency:
        name = f"@{load.offered_per_s:,}/s"
        summary = load.latency
        table.append(_row(f"{name} achieved rate", load.achieved_per_s, "tx/s", digits=0))
        for label in ("p50", "p95", "p99", "max"):
            value = getattr(summary, f"{label}_ms") if summary else None
            target = P99_TARGET_MS.get(load.offered_per_s) if label == "p99" else None
            table.append(_row(f"{name} latency {label}", value, "ms", target, digits=0))
        if load.missing:
            table.append((f"{name} not observed", f"{load.missing:,}", "0", "MISS"))
    if recovery is not None:
        members = f"{recovery.members:,} members"
        rss_target = 500.0 if recovery.members >= 1_000_000 else None
        table += [
            _row("start, empty table", recovery.empty_start_s, "s", digits=2),
            _row(f"start, {members} (cold)", recovery.cold_start_s, "s", digits=2),
            _row("cold rebuild per 1M members", recovery.cold_s_per_million, "s", 20),
            _row("warm restart", recovery.warm_restart_s, "s", 5, digits=2),
            _row(f"worker RSS, {members}", recovery.memory_cold.rss_mb, "MB", rss_target, digits=0),
        ]
    table.append(_row("worker peak RSS (VmHWM)", results.peak_rss_mb, "MB", digits=0))
    return table


def format_table(table: list[Row]) -> str:
    header: Row = ("metric", "value", "target", "")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
    lines = []
    for index, row in enumerate([header, *table]):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3]]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths[:3]))
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    document = dataclasses.asdict(results)
    document["engine_vs_baseline"] = results.engine_vs_baseline
    document["engine_vs_faust_floor"] = results.engine_vs_faust_floor
    document["peak_rss_mb"] = results.peak_rss_mb
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
