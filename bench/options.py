"""The benchmark's options: sizes, offered loads and the ``--quick`` preset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchOptions:
    transactions: int = 200_000
    """Transactions preloaded for the throughput and baseline phases."""
    members: int = 50_000
    partitions: int = 8
    loads: tuple[int, ...] = (1_000, 5_000)
    """Offered loads (transactions per second) of the latency phase."""
    load_seconds: float = 20.0
    recovery_members: int = 1_000_000
    """Size of the member table a fresh worker rebuilds from its changelog."""
    scale: bool = True
    """Run the scale-out phase: the preloaded transactions by one worker, then by two."""
    out: Path = Path("bench-results.json")
    seed: int = 7
    quick: bool = False


FULL = BenchOptions()
QUICK = BenchOptions(
    transactions=3_000,
    members=1_000,
    loads=(200,),
    load_seconds=3.0,
    recovery_members=20_000,
    quick=True,
)


def parse_loads(text: str) -> tuple[int, ...]:
    """``"1000,5000"`` -> ``(1000, 5000)``; every load must be a positive integer."""
    loads = tuple(int(part) for part in text.split(",") if part.strip())
    if not loads or any(load <= 0 for load in loads):
        raise ValueError(f"loads must be positive integers separated by commas, got {text!r}")
    return loads


def resolve(
    quick: bool,
    out: Path,
    transactions: int | None = None,
    members: int | None = None,
    partitions: int | None = None,
    loads: tuple[int, ...] | None = None,
    load_seconds: float | None = None,
    recovery_members: int | None = None,
    seed: int | None = None,
    scale: bool | None = None,
) -> BenchOptions:
    """The preset (``--quick`` or the full run) with every option given explicitly on top."""
    preset = QUICK if quick else FULL
    options = BenchOptions(
        transactions=preset.transactions if transactions is None else transactions,
        members=preset.members if members is None else members,
        partitions=preset.partitions if partitions is None else partitions,
        loads=preset.loads if loads is None else loads,
        load_seconds=preset.load_seconds if load_seconds is None else load_seconds,
        recovery_members=preset.recovery_members if recovery_members is None else recovery_members,
        scale=preset.scale if scale is None else scale,
        out=out,
        seed=preset.seed if seed is None else seed,
        quick=quick,
    )
    if options.transactions < 1 or options.members < 1 or options.partitions < 1:
        raise ValueError("--transactions, --members and --partitions must be >= 1")
    if options.load_seconds <= 0 or options.recovery_members < 0:
        raise ValueError("--load-seconds must be > 0 and --recovery-members >= 0")
    return options
