"""The ``loyalty`` command: worker, local Kafka broker, topics, rewards catalog, live demo."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from loyalty.streams.settings import from_env


def _stop_at_once(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _worker(args: argparse.Namespace) -> int:
    # Importing Faust takes seconds: a stop signal meanwhile ends the command cleanly, until
    # the worker installs its own handlers (cli.worker).
    signal.signal(signal.SIGTERM, _stop_at_once)
    signal.signal(signal.SIGINT, _stop_at_once)
    from loyalty.cli.worker import run_worker

    return run_worker(from_env())


def _topics(args: argparse.Namespace) -> int:
    from loyalty.streams.topics import ensure_topics

    settings = from_env()
    created = ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    print(
        f"{settings.topics.deadletter}: records kept "
        f"{settings.deadletter_retention_days:g} days (LOYALTY_DEADLETTER_RETENTION_DAYS)"
    )
    return 0


def _daily(args: argparse.Namespace) -> int:
    import time
    from datetime import date, timedelta

    from loyalty.core.program import load_program
    from loyalty.schemas.decode import InvalidEvent, check_daily_date, latest_daily_date
    from loyalty.streams.topics import ensure_topics, send_daily_commands

    settings = from_env()
    # Tomorrow in the program's time zone is the latest date a job may run for (the worker
    # refuses a later one too): a job for a far date would expire points that are not due.
    latest = latest_daily_date(
        time.time_ns() // 1_000_000, load_program(settings.program_path).timezone
    )
    if args.date:
        try:
            day = check_daily_date(date.fromisoformat(args.date), latest)
        except ValueError as error:  # InvalidEvent is a ValueError too
            text = error.message if isinstance(error, InvalidEvent) else "not a YYYY-MM-DD date"
            print(f"loyalty daily: --date {args.date}: {text}", file=sys.stderr)
            return 2
    else:
        day = latest - timedelta(days=1)
    ensure_topics(settings)
    partitions = send_daily_commands(settings, day)
    print(f"daily jobs of {day.isoformat()} requested on {partitions} partitions")
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from loyalty.schemas.catalog import CatalogError, load_catalog_file
    from loyalty.streams.topics import ensure_topics, publish_catalog

    settings = from_env()
    try:
        rewards = load_catalog_file(args.file)  # the whole file is valid before anything is sent
    except CatalogError as error:
        print(f"loyalty catalog load: {error}", file=sys.stderr)
        return 2
    ensure_topics(settings)
    publish_catalog(settings, rewards)
    for reward in rewards:
        stock = "unlimited" if reward.stock is None else f"stock {reward.stock}"
        limit = "" if reward.per_member_limit is None else f", {reward.per_member_limit} per member"
        state = "active" if reward.active else "inactive"
        print(
            f"published {reward.reward_id}: {reward.name['en']!r}, {reward.cost_points} points, "
            f"{stock}{limit}, {state}"
        )
    print(f"{len(rewards)} rewards published to {settings.topics.catalog}")
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from loyalty.localkafka import broker

    if args.action == "acls":
        return _kafka_acls(args)
    data_dir = Path(args.data_dir)
    if args.action == "install":
        print(broker.install())
        return 0
    if args.action == "start":
        users = broker.LOCAL_SASL_USERS if args.sasl else None
        try:
            status = broker.start(port=args.port, data_dir=data_dir, sasl_users=users)
        except broker.BrokerError as error:
            print(f"loyalty kafka start: {error}", file=sys.stderr)
            return 1
    elif args.action == "stop":
        stopped = broker.stop(data_dir=data_dir)
        print("stopped" if stopped else "not running")
        return 0
    else:
        status = broker.status(data_dir=data_dir)
    if status.running:
        sasl = " sasl=PLAIN" if status.sasl else ""
        print(f"running: bootstrap={status.bootstrap} pid={status.pid} data_dir={data_dir}{sasl}")
        return 0
    print(f"not running (data_dir={data_dir})")
    return 0 if args.action == "status" else 1


def _kafka_acls(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from loyalty.streams.acls import AclError, Principals, acl_plan, apply_plan

    settings = from_env()
    try:
        principals = Principals(
            worker=args.worker_principal,
            pos=args.pos_principal,
            station=args.station_principal,
            crm=args.crm_principal,
            operator=args.operator_principal,
            reader=args.reader_principal,
            reader_group=args.reader_group,
        )
    except ValueError as error:
        print(f"loyalty kafka acls: {error}", file=sys.stderr)
        return 2
    plan = acl_plan(settings, principals)
    for grant in plan:
        print(grant)
    if not args.apply:
        print(f"{len(plan)} ACLs planned; --apply creates them on {settings.kafka_bootstrap}")
        return 0
    try:
        created = apply_plan(settings, plan)
    except (AclError, KafkaError) as error:
        print(f"loyalty kafka acls: {error!r}", file=sys.stderr)
        return 1
    print(f"{len(created)} ACLs created, {len(plan) - len(created)} already present")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from loyalty.demo.run import run_demo

    return run_demo(port=args.port, rate=args.rate, duration=args.duration)


def _bench(args: argparse.Namespace) -> int:
    from loyalty.bench.options import parse_loads, resolve
    from loyalty.bench.run import run_bench

    try:
        options = resolve(
            quick=args.quick,
            out=Path(args.out),
            transactions=args.transactions,
            members=args.members,
            partitions=args.partitions,
            loads=parse_loads(args.loads) if args.loads else None,
            load_seconds=args.load_seconds,
            recovery_members=args.recovery_members,
            seed=args.seed,
            scale=args.scale,
        )
    except ValueError as error:
        print(f"loyalty bench: {error}", file=sys.stderr)
        return 2
    return run_bench(options, keep=Path(args.keep) if args.keep else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loyalty", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("worker", help="run a worker (settings from LOYALTY_* variables)")
    commands.add_parser("topics", help="create the engine's topics that do not exist yet")

    daily = commands.add_parser(
        "daily", help="run the daily jobs (birthdays, expiry, tier review) for a date"
    )
    daily.add_argument("--date", help="YYYY-MM-DD; default: today in the program's time zone")

    catalog = commands.add_parser(
        "catalog",
        help="the rewards catalog",
        description="Publish the rewards catalog to the catalog topic (LOYALTY_TOPIC_CATALOG).",
    )
    catalog_actions = catalog.add_subparsers(dest="action", required=True)
    catalog_load = catalog_actions.add_parser(
        "load",
        help="validate a catalog file and publish its rewards",
        description="Validate a catalog file (TOML, see program/catalog.toml) and publish "
        "each of its rewards, keyed by reward_id; an invalid file publishes nothing (exit "
        "status 2). A reward that is on the topic but not in the file is NOT deleted: retire "
        "it by publishing it with active = false.",
    )
    catalog_load.add_argument("file", help="the catalog file, e.g. program/catalog.toml")

    kafka = commands.add_parser(
        "kafka", help="a local single-node Kafka broker (KRaft), and the engine's ACLs"
    )
    kafka_actions = kafka.add_subparsers(dest="action", required=True)
    local_broker = argparse.ArgumentParser(add_help=False)
    local_broker.add_argument("--port", type=int, default=9092)
    local_broker.add_argument("--data-dir", default=".local/kafka")
    kafka_start = kafka_actions.add_parser(
        "start", parents=[local_broker], help="start the local broker (no-op if running)"
    )
    kafka_start.add_argument(
        "--sasl",
        action="store_true",
        help="SASL/PLAIN listener and ACLs (users admin, worker, pos, station, crm, operator, "
        "notifications; password <user>-secret; admin is the super user)",
    )
    for action, help_text in (
        ("stop", "stop the local broker"),
        ("status", "is the local broker running, and where"),
        ("install", "fetch the broker jars into the cache"),
    ):
        kafka_actions.add_parser(action, parents=[local_broker], help=help_text)
    acls = kafka_actions.add_parser(
        "acls",
        help="print (or --apply) the ACLs that keep internal topics to the workers",
        description="Print the Kafka ACLs of the engine, one line per grant: only the "
        "workers write the internal and output topics, the POS principal writes transactions, "
        "the station principal redemptions, the CRM principal members, the operator the "
        "catalog and the daily commands; a downstream reader reads the outputs. With --apply, "
        "create the missing ones on LOYALTY_KAFKA_BOOTSTRAP, logged in with "
        "LOYALTY_KAFKA_SECURITY_PROTOCOL / LOYALTY_KAFKA_SASL_* as a super user (running it "
        "twice is fine; nothing is deleted). See docs/security.md, 'Kafka ACLs'.",
    )
    acls.add_argument("--apply", action="store_true", help="create the missing ACLs")
    for role, default in (
        ("worker", "User:worker"),
        ("pos", "User:pos"),
        ("station", "User:station"),
        ("crm", "User:crm"),
        ("operator", "User:operator"),
        ("reader", "User:notifications"),
    ):
        acls.add_argument(f"--{role}-principal", default=default, help=f"default {default}")
    acls.add_argument("--reader-group", default="notifications", help="the reader's consumer group")

    demo = commands.add_parser("demo", help="local broker + worker + POS simulator, live")
    demo.add_argument("--port", type=int, default=9092, help="port of the local broker")
    demo.add_argument("--rate", type=float, default=5.0, help="transactions per second")
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")

    bench = commands.add_parser(
        "bench", help="benchmark on a local broker: throughput, latency, scale-out, recovery"
    )
    bench.add_argument("--transactions", type=int, help="preloaded transactions (200000)")
    bench.add_argument("--members", type=int, help="members of the workload (50000)")
    bench.add_argument("--partitions", type=int, help="partitions of every topic (8)")
    bench.add_argument("--loads", help="offered loads of the latency phase, tx/s (1000,5000)")
    bench.add_argument("--load-seconds", type=float, help="seconds per offered load (20)")
    bench.add_argument("--recovery-members", type=int, help="member table to rebuild (1000000)")
    bench.add_argument("--seed", type=int, help="seed of the workload (7)")
    bench.add_argument(
        "--scale",
        action=argparse.BooleanOptionalAction,
        help="time the preloaded transactions with one worker, then two (default: on)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a tiny run for CI (3000 transactions, 1000 members)"
    )
    bench.add_argument("--out", default="bench-results.json", help="JSON file of the figures")
    bench.add_argument("--keep", help="keep broker data and worker logs in this directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    from loyalty.core.program import ProgramError

    args = build_parser().parse_args(argv)
    handler = {
        "worker": _worker,
        "topics": _topics,
        "daily": _daily,
        "catalog": _catalog,
        "kafka": _kafka,
        "demo": _demo,
        "bench": _bench,
    }
    try:
        return handler[args.command](args)
    except ProgramError as error:
        print(f"loyalty: invalid program file: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
