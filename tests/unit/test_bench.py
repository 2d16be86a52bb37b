"""The pure parts of ``loyalty bench``: statistics, options, the results table, and the
workload's mix, checked against the engine's own decoding and pure transitions (every input
valid, one reward each)."""

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from loyalty.bench.baseline import BaselineResult, scratch_value
from loyalty.bench.cluster import Memory, partition_probes
from loyalty.bench.faust_floor import format_offsets, parse_offsets
from loyalty.bench.options import QUICK, parse_loads, resolve
from loyalty.bench.preload import PreloadResult
from loyalty.bench.pure_path import PurePathResult, run_pure_path
from loyalty.bench.recovery import changelog_records
from loyalty.bench.report import Results, rows
from loyalty.bench.scale import ScaleResult
from loyalty.bench.stats import percentile, rate, ratio, summarize
from loyalty.bench.throughput import ThroughputResult, outcome_counts
from loyalty.bench.workload import (
    Mix,
    TransactionGenerator,
    member_events,
    member_ids,
    newsletter_members,
)
from loyalty.core.accounts import apply_member_event, apply_transaction
from loyalty.core.program import load_program
from loyalty.core.render import render_transaction
from loyalty.schemas.decode import decode_member_event, decode_transaction
from loyalty.schemas.state import MemberState, decode_state
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.settings import DEFAULT_PROGRAM

PROGRAM = load_program(Path("program/default.toml"))
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NOW_MS = 1_795_000_000_000


# --- statistics -----------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([7.0], 0.99) == 7
    # Ten values: p99 is the largest, p50 the fifth.
    ten = [float(v) for v in range(10)]
    assert percentile(ten, 0.99) == 9
    assert percentile(ten, 0.5) == 4


def test_percentile_rejects_no_values_and_bad_fractions():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_summarize_reports_milliseconds_of_unsorted_seconds():
    summary = summarize([0.003, 0.001, 0.002, 0.010])
    assert summary is not None
    assert summary.count == 4
    assert (summary.p50_ms, summary.p99_ms, summary.max_ms) == (2.0, 10.0, 10.0)
    assert summary.mean_ms == 4.0
    assert summarize([]) is None


def test_rate_and_ratio():
    assert rate(1000, 4.0) == 250.0
    assert rate(10, 0) == 0.0
    assert ratio(1, 3) == 0.333
    assert ratio(1, 0) is None


# --- options --------------------------------------------------------------------------------


def test_parse_loads():
    assert parse_loads("1000,5000") == (1000, 5000)
    assert parse_loads(" 200 ") == (200,)
    for bad in ("", "0", "10,-5", "fast"):
        with pytest.raises(ValueError):
            parse_loads(bad)


def test_quick_preset_with_explicit_options_on_top():
    options = resolve(quick=True, out=Path("x.json"), transactions=500)
    assert options.transactions == 500
    assert options.members == QUICK.members
    assert options.loads == QUICK.loads
    assert options.quick
    full = resolve(quick=False, out=Path("x.json"))
    assert (full.transactions, full.members, full.loads) == (200_000, 50_000, (1000, 5000))
    assert full.recovery_members == 1_000_000
    assert full.scale and options.scale
    assert not resolve(quick=True, out=Path("x.json"), scale=False).scale
    with pytest.raises(ValueError):
        resolve(quick=False, out=Path("x.json"), transactions=0)


# --- scale-out ------------------------------------------------------------------------------


def test_partition_probes_reach_every_partition_in_order():
    probes = partition_probes(8)
    assert [owner_partition(p["member_id"].encode(), 8) for p in probes] == list(range(8))
    assert len({probe["transaction_id"] for probe in probes}) == 8


def _throughput(tx_per_s: float) -> ThroughputResult:
    return ThroughputResult(
        transactions=3000,
        reward_events=3000,
        dead_letters=0,
        seconds=round(3000 / tx_per_s, 3),
        tx_per_s=tx_per_s,
        start_to_last_output_s=5.0,
        outcomes={"sale": 3000},
    )


def test_table_shows_both_scale_out_runs_and_their_ratio():
    scale = ScaleResult(_throughput(1000.0), _throughput(1800.0), ratio(1800.0, 1000.0))
    results = Results(
        started_at="2026-11-23T12:00:00+00:00",
        duration_s=60.0,
        options={},
        machine={},
        preload=PreloadResult(3000, 1000, 100, 50, {"sale": 3000}, 0.2, 15000.0),
        throughput=_throughput(1200.0),
        latency=[],
        baseline=BaselineResult(messages=3000, seconds=0.1, msg_per_s=30000.0),
        pure_path=PurePathResult(3000, 0, 0.3, 10000.0, 100.0, 700),
        faust_floor=BaselineResult(messages=3000, seconds=0.25, msg_per_s=12000.0),
        scale=scale,
        recovery=None,
        worker_memory={"scale-2.1": Memory(peak_mb=110.0, rss_mb=100.0)},
    )
    table = {metric: value for metric, value, _, _ in rows(results)}
    assert table["scale-out: 1 worker"] == "1,000 tx/s"
    assert table["scale-out: 2 workers"] == "1,800 tx/s"
    assert table["scale-out: 2 workers / 1"] == "1.80"
    without = rows(dataclasses.replace(results, scale=None))
    assert not [row for row in without if row[0].startswith("scale-out")]
    # The Faust floor follows the baseline, and the engine is shown as a share of each.
    metrics = [metric for metric, _, _, _ in rows(results)]
    assert metrics[1:5] == [
        "raw aiokafka baseline",
        "engine / baseline",
        "Faust floor (bare agent)",
        "engine / Faust floor",
    ]
    assert table["Faust floor (bare agent)"] == "12,000 msg/s"
    assert table["engine / Faust floor"] == "0.100"
    assert results.engine_vs_faust_floor == 0.1
    assert table["pure path (rules alone, 1 core)"] == "10,000 tx/s"


def test_pure_path_runs_the_whole_workload_through_the_rules():
    options = dataclasses.replace(QUICK, transactions=400, members=100)
    result = run_pure_path(options, load_program(DEFAULT_PROGRAM), 65536)
    assert result.transactions == 400
    assert result.rejected == 0  # the workload is valid: every transaction is applied
    assert result.tx_per_s > 0 and result.us_per_tx > 0
    assert result.mean_state_bytes > 100  # enrolled members with applied transactions


# --- baseline and Faust floor ---------------------------------------------------------------


def test_stop_offsets_survive_the_floor_command_line():
    stop = {3: 0, 0: 1250, 1: 7}
    assert format_offsets(stop) == "0:1250,1:7,3:0"
    assert parse_offsets(format_offsets(stop)) == stop
    assert parse_offsets(format_offsets({})) == {}


def test_scratch_value_keeps_the_ids_and_litres_of_the_transaction():
    _, _, _, stream = _workload(10, 10)
    output = orjson.loads(scratch_value(orjson.dumps(stream[0])))
    assert output == {
        "transaction_id": stream[0]["transaction_id"],
        "member_id": stream[0]["member_id"],
        "liters": stream[0]["liters"],
    }


# --- workload -------------------------------------------------------------------------------


def _issued_coupons(events: list[dict]) -> tuple[dict[str, MemberState], dict[str, str]]:
    """The engine's pure transition over the member events: states and issued codes."""
    states: dict[str, MemberState] = {}
    coupons: dict[str, str] = {}
    for raw in events:
        event = decode_member_event(orjson.dumps(raw), 65536)
        state, outcome = apply_member_event(
            states.get(event.member_id, MemberState()), event, PROGRAM, NOW_MS
        )
        states[event.member_id] = state
        if "coupon_issued" in outcome.applied.details:
            coupons[event.member_id] = outcome.applied.details["coupon_issued"]
    return states, coupons


def _workload(transactions: int, members: int, seed: int = 3):
    ids = member_ids(members)
    events = member_events(newsletter_members(ids, Mix().newsletter_share), START, "t1")
    states, coupons = _issued_coupons(events)
    generator = TransactionGenerator(ids, coupons, "t1", seed=seed)
    step = timedelta(days=20) / transactions
    stream = [generator.next(START + timedelta(days=1) + step * i) for i in range(transactions)]
    return generator, states, coupons, stream


def test_member_events_subscribe_five_percent_of_members():
    ids = member_ids(1000)
    subscribers = newsletter_members(ids, 0.05)
    assert len(subscribers) == 50
    events = member_events(subscribers, START, "t1")
    assert Counter(event["type"] for event in events) == {
        "signup": 50,
        "newsletter_subscribed": 50,
    }
    assert len({event["event_id"] for event in events}) == 100
    _, coupons = _issued_coupons(events)
    assert len(coupons) == 50  # one coupon per subscriber, issued by the engine's transition


def test_workload_mix_shares():
    generator, _, _, stream = _workload(20_000, 2_000)
    counts = generator.counts
    total = len(stream)
    assert counts["sale"] + counts["refund"] == total
    assert 0.02 < counts["refund"] / total < 0.04
    coupon_sales = sum(1 for t in stream if t.get("coupon_codes"))
    assert 0.035 < coupon_sales / counts["sale"] < 0.065
    # Most presented codes are invalid; some are the member's own coupon.
    own = counts["coupon_own"]
    invalid = counts["coupon_foreign"] + counts["coupon_made_up"] + counts["coupon_reused"]
    assert 0 < own < invalid
    assert counts["over_threshold"] / counts["sale"] > 0.7
    liters = [t["liters"] for t in stream if t["type"] == "sale"]
    assert min(liters) >= 5 and max(liters) <= 70
    assert 0.15 < counts["heavy"] / counts["sale"] < 0.25
    # A transaction id is unique, and every member id is one of the pool.
    assert len({t["transaction_id"] for t in stream}) == total
    assert {t["member_id"] for t in stream} <= set(member_ids(2_000))


def test_workload_is_reproducible():
    first = _workload(500, 100, seed=11)[3]
    second = _workload(500, 100, seed=11)[3]
    assert first == second
    assert first != _workload(500, 100, seed=12)[3]


def test_refunds_reference_an_earlier_sale_of_the_same_member_once():
    _, _, _, stream = _workload(5_000, 500)
    sales = {}
    refunded = set()
    for transaction in stream:
        if transaction["type"] == "sale":
            sales[transaction["transaction_id"]] = transaction
            continue
        original = sales[transaction["original_transaction_id"]]  # earlier in the stream
        assert original["member_id"] == transaction["member_id"]
        assert 0 < transaction["liters"] <= original["liters"]
        assert transaction["original_transaction_id"] not in refunded
        refunded.add(transaction["original_transaction_id"])


def test_engine_accepts_every_transaction_and_sees_the_whole_mix():
    """Applied with the engine's own pure transition: nothing is rejected (each input has
    exactly one reward event), coupons come out with every status, heavy buyers reach the
    top tier."""
    _, states, _, stream = _workload(6_000, 400)
    statuses: Counter[str] = Counter()
    tier_changes = 0
    rewards = []
    for raw in stream:
        transaction = decode_transaction(orjson.dumps(raw), 65536)
        state = states.get(transaction.member_id, MemberState())
        state, outcome = apply_transaction(state, transaction, PROGRAM, NOW_MS)
        assert not outcome.duplicate
        states[transaction.member_id] = state
        reward = render_transaction(transaction, outcome.applied, state, PROGRAM).reward
        rewards.append(orjson.loads(orjson.dumps(reward)))
        details = outcome.applied.details
        statuses.update(coupon["status"] for coupon in details.get("coupons", ()))
        tier_changes += "tier_change" in details
    assert statuses.keys() >= {"redeemed", "unknown_coupon", "not_owner", "coupon_used"}
    assert statuses["redeemed"] < sum(statuses.values()) / 2
    assert tier_changes > 0
    assert {state.tier for state in states.values()} >= {"bronze", "silver", "gold"}
    # The bench's summary of the reward events it reads back from the engine.
    counts = outcome_counts(rewards)
    assert counts["sale"] + counts["refund"] == len(stream)
    assert counts["coupon:redeemed"] == statuses["redeemed"]
    assert counts["tier:silver"] > 0 and counts["tier:gold"] > 0
    assert counts["missions"] > 0 and counts["enrolled"] > 0


def test_bench_sent_at_is_an_ignored_extra_field():
    _, _, _, stream = _workload(10, 10)
    transaction = {**stream[0], "bench_sent_at": 1_795_000_000.123}
    assert decode_transaction(orjson.dumps(transaction), 65536).transaction_id


def test_changelog_records_are_owner_partitioned_member_states():
    records = list(changelog_records(100, 8, seed=1))
    assert len(records) == 100
    for key, value, partition in records:
        assert partition == owner_partition(key, 8)
        state = decode_state(value)
        assert state.welcome_given and state.enrolled_at and state.balance >= 0
