"""Every setting of the engine, read once from environment variables.

Tests and tools build :class:`Settings` directly; only :func:`from_env` reads the
environment. Each field's docstring names its variable and default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

PROGRAM_DIR = Path(__file__).resolve().parent.parent / "program"
"""The program files that come with the engine: program/ of the repository, or
``loyalty/program`` of an installed wheel."""
DEFAULT_PROGRAM = PROGRAM_DIR / "default.toml"
DEFAULT_PEER_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TopicNames:
    """Kafka topic names: the public contract. Each can be renamed per deployment."""

    transactions: str = "loyalty.transactions"
    """``LOYALTY_TOPIC_TRANSACTIONS``: POS fuel transactions (input)."""
    members: str = "loyalty.members"
    """``LOYALTY_TOPIC_MEMBERS``: member events (input)."""
    ledger: str = "loyalty.ledger"
    """``LOYALTY_TOPIC_LEDGER``: one entry per balance change (output)."""
    rewards: str = "loyalty.rewards"
    """``LOYALTY_TOPIC_REWARDS``: what each input event earned (output)."""
    notifications: str = "loyalty.notifications"
    """``LOYALTY_TOPIC_NOTIFICATIONS``: messages for notification services (output)."""
    deadletter: str = "loyalty.deadletter"
    """``LOYALTY_TOPIC_DEADLETTER``: rejected input with its reason and original bytes."""
    segments: str = "loyalty.segments"
    """``LOYALTY_TOPIC_SEGMENTS``: a member entering or leaving a segment (output)."""
    catalog: str = "loyalty.catalog"
    """``LOYALTY_TOPIC_CATALOG``: the rewards catalog (compacted, key ``reward_id``)."""
    redemptions: str = "loyalty.redemptions"
    """``LOYALTY_TOPIC_REDEMPTIONS``: redemption requests and their fulfilment or cancellation
    by stations (input, key ``request_id``)."""
    rekeyed: str = "loyalty.transactions.rekeyed"
    """``LOYALTY_TOPIC_REKEYED``: internal; transactions forwarded to their member's partition."""
    members_rekeyed: str = "loyalty.members.rekeyed"
    """``LOYALTY_TOPIC_MEMBERS_REKEYED``: internal; member events forwarded likewise."""
    daily: str = "loyalty.daily"
    """``LOYALTY_TOPIC_DAILY``: internal; daily-job commands, one message per partition."""
    referrals: str = "loyalty.referrals"
    """``LOYALTY_TOPIC_REFERRALS``: internal; referral-code registrations and claims, keyed
    by code."""
    member_commands: str = "loyalty.member-commands"
    """``LOYALTY_TOPIC_MEMBER_COMMANDS``: internal; referral outcomes and redemption steps
    sent to a member's partition, keyed by member_id."""
    redemption_steps: str = "loyalty.redemption-steps"
    """``LOYALTY_TOPIC_REDEMPTION_STEPS``: internal; replies of the member and stock
    partitions to a redemption's coordinator, and misplaced redemption messages, keyed by
    request_id."""
    stock_commands: str = "loyalty.stock-commands"
    """``LOYALTY_TOPIC_STOCK_COMMANDS``: internal; stock reservations and returns, keyed by
    reward_id."""


@dataclass(frozen=True)
class Settings:
    """Worker settings. Build with :func:`from_env` in production, directly in tests."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    """``LOYALTY_KAFKA_BOOTSTRAP``: Kafka bootstrap servers, comma-separated host:port."""
    kafka_security_protocol: str = "PLAINTEXT"
    """``LOYALTY_KAFKA_SECURITY_PROTOCOL``: ``PLAINTEXT``, or ``SASL_PLAINTEXT`` to log in
    with the SASL settings below. Used by ``loyalty kafka acls`` (the worker's own clients
    do not speak SASL yet: issue 13)."""
    kafka_sasl_mechanism: str = "PLAIN"
    """``LOYALTY_KAFKA_SASL_MECHANISM``: the SASL mechanism (``PLAIN``)."""
    kafka_sasl_username: str = ""
    """``LOYALTY_KAFKA_SASL_USERNAME``: the SASL user name; default empty."""
    kafka_sasl_password: str = field(default="", repr=False)
    """``LOYALTY_KAFKA_SASL_PASSWORD``: the SASL password; default empty."""
    data_dir: Path = Path(".local/state")
    """``LOYALTY_DATA_DIR``: directory of the worker's RocksDB table state."""
    web_port: int = 6066
    """``LOYALTY_WEB_PORT``: HTTP port of the worker (``/metrics``, the member profile API,
    ``/openapi.json``)."""
    web_host: str = "127.0.0.1"
    """``LOYALTY_WEB_HOST``: interface the worker's HTTP server binds."""
    web_url: str = ""
    """``LOYALTY_WEB_URL``: the URL other workers reach this worker's HTTP server at (they
    forward member requests to the worker owning the member); empty means
    ``http://{LOYALTY_WEB_HOST}:{LOYALTY_WEB_PORT}``, with the host name in place of
    ``0.0.0.0`` (a container's name, for Docker)."""
    program_path: Path = DEFAULT_PROGRAM
    """``LOYALTY_PROGRAM``: path of the loyalty program file (TOML)."""
    app_id: str = "loyalty-stream"
    """``LOYALTY_APP_ID``: Kafka consumer group and prefix of the changelog topics."""
    partitions: int = 8
    """``LOYALTY_PARTITIONS``: partitions of every topic the engine creates."""
    replication_factor: int = 1
    """``LOYALTY_REPLICATION_FACTOR``: replication factor of the topics the engine creates."""
    max_event_bytes: int = 65536
    """``LOYALTY_MAX_EVENT_BYTES``: larger input values go to the dead-letter topic."""
    max_state_bytes: int = 262144
    """``LOYALTY_MAX_STATE_BYTES``: most bytes a table value (a member's stored state) may
    take; an input record whose outcome would store more goes to the dead-letter topic
    (``state_too_large``) and changes nothing."""
    max_future_skew_s: int = 300
    """``LOYALTY_MAX_FUTURE_SKEW_S``: an input whose ``occurred_at`` is later than the worker's
    clock plus this many seconds goes to the dead-letter topic (``future_timestamp``): one
    record dated years ahead would otherwise make the member's later records stale."""
    session_timeout_s: float = 10.0
    """``LOYALTY_SESSION_TIMEOUT_S``: a worker silent this long is considered dead and its
    partitions move to the others (Kafka's group session timeout)."""
    daily_cron: str = "5 0 * * *"
    """``LOYALTY_DAILY_CRON``: when the daily jobs start by themselves (cron format, in the
    program's time zone); empty to leave them to ``loyalty daily`` alone."""
    standby_replicas: int = 1
    """``LOYALTY_STANDBY_REPLICAS``: how many other workers keep a warm copy of each table
    partition (read from its changelog), so a failover skips the rebuild."""
    batch_max: int = 2000
    """``LOYALTY_BATCH_MAX``: most input messages the account agent commits as one batch
    (one changelog round trip, then one for the outputs); the messages that arrive during a
    commit form the next batch, so batches are only this big under heavy load."""
    fetch_max_wait_ms: int = 20
    """``LOYALTY_FETCH_MAX_WAIT_MS``: longest the broker holds a fetch request that found no
    new records. A record arriving meanwhile on a partition left out of that request waits
    for it, so this bounds the added latency; a lower value costs more fetches when idle."""
    max_partition_idle_ms: int = 1000
    """``LOYALTY_MAX_PARTITION_IDLE_MS``: longest the account agent holds a member partition's
    records back while one of its input topics' partitions may have records it has not
    received (they are applied in timestamp order, as Kafka Streams does: README, Delivery
    guarantees); past it they go on without them. 0: no wait, only the records already
    received are ordered."""
    log_level: str = "warn"
    """``LOYALTY_LOG_LEVEL``: worker log level (crit, error, warn, info, debug)."""
    peer_hosts: tuple[str, ...] = DEFAULT_PEER_HOSTS
    """``LOYALTY_PEER_HOSTS``: the only hosts a worker forwards member requests to,
    comma-separated host names, IP addresses or IP networks (``10.0.0.0/8``); default
    ``127.0.0.1,localhost,::1``. A Docker or Kubernetes deployment lists its workers' names
    (or their network): the host of each worker's ``LOYALTY_WEB_URL``."""
    peer_token: str = field(default="", repr=False)
    """``LOYALTY_PEER_TOKEN``: secret shared by the workers of a group; a forwarded answer is
    relayed only if its worker proves it. Empty (the default): no forwarding, a worker
    answers 503 for members another worker holds. At least 32 random characters."""
    http_timeout_s: float = 10.0
    """``LOYALTY_HTTP_TIMEOUT_S``: an HTTP connection is closed when its client takes longer
    than this to send a whole request (from the connection or the previous answer on)."""
    shutdown_grace_s: float = 8.0
    """``LOYALTY_SHUTDOWN_GRACE_S``: longest a worker takes to stop once asked (SIGTERM,
    SIGINT) or once an agent crashed; past it the process ends itself (exit status 3 after a
    signal, 1 after a crash) instead of lingering (``cli.worker``)."""
    deadletter_retention_days: float = 7.0
    """``LOYALTY_DEADLETTER_RETENTION_DAYS``: how long ``loyalty.deadletter`` keeps a record
    (the topic's ``retention.ms``, set when the engine creates or checks its topics): a dead
    letter can hold a member's personal data, which an erase does not reach."""
    topics: TopicNames = field(default_factory=TopicNames)

    @property
    def advertised_url(self) -> str:
        """Where other workers reach this worker's HTTP server: ``LOYALTY_WEB_URL``, else the
        bound interface, or the host name when the server binds every interface."""
        if self.web_url:
            return self.web_url
        host = socket.gethostname() if self.web_host in ("0.0.0.0", "::") else self.web_host
        return f"http://{host}:{self.web_port}"

    def kafka_security_options(self) -> dict[str, str]:
        """The security options of a kafka-python or aiokafka client (same names in both):
        none for ``PLAINTEXT``, the SASL login otherwise."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        return {
            "security_protocol": self.kafka_security_protocol,
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_plain_username": self.kafka_sasl_username,
            "sasl_plain_password": self.kafka_sasl_password,
        }


def _topic_names(env: dict[str, str]) -> TopicNames:
    defaults = TopicNames()
    return TopicNames(
        **{
            name: env.get(f"LOYALTY_TOPIC_{name.upper()}", getattr(defaults, name))
            for name in TopicNames.__dataclass_fields__
        }
    )


def _host_list(text: str) -> tuple[str, ...]:
    return tuple(host.strip() for host in text.split(",") if host.strip())


def from_env(env: dict[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``); unset variables keep defaults."""
    env = dict(os.environ if env is None else env)
    defaults = Settings()
    return Settings(
        kafka_bootstrap=env.get("LOYALTY_KAFKA_BOOTSTRAP", defaults.kafka_bootstrap),
        kafka_security_protocol=env.get(
            "LOYALTY_KAFKA_SECURITY_PROTOCOL", defaults.kafka_security_protocol
        ),
        kafka_sasl_mechanism=env.get("LOYALTY_KAFKA_SASL_MECHANISM", defaults.kafka_sasl_mechanism),
        kafka_sasl_username=env.get("LOYALTY_KAFKA_SASL_USERNAME", defaults.kafka_sasl_username),
        kafka_sasl_password=env.get("LOYALTY_KAFKA_SASL_PASSWORD", defaults.kafka_sasl_password),
        data_dir=Path(env.get("LOYALTY_DATA_DIR", str(defaults.data_dir))),
        web_port=int(env.get("LOYALTY_WEB_PORT", defaults.web_port)),
        web_host=env.get("LOYALTY_WEB_HOST", defaults.web_host),
        web_url=env.get("LOYALTY_WEB_URL", defaults.web_url),
        program_path=Path(env.get("LOYALTY_PROGRAM", str(defaults.program_path))),
        app_id=env.get("LOYALTY_APP_ID", defaults.app_id),
        partitions=int(env.get("LOYALTY_PARTITIONS", defaults.partitions)),
        replication_factor=int(env.get("LOYALTY_REPLICATION_FACTOR", defaults.replication_factor)),
        max_event_bytes=int(env.get("LOYALTY_MAX_EVENT_BYTES", defaults.max_event_bytes)),
        max_state_bytes=int(env.get("LOYALTY_MAX_STATE_BYTES", defaults.max_state_bytes)),
        max_future_skew_s=int(env.get("LOYALTY_MAX_FUTURE_SKEW_S", defaults.max_future_skew_s)),
        session_timeout_s=float(env.get("LOYALTY_SESSION_TIMEOUT_S", defaults.session_timeout_s)),
        daily_cron=env.get("LOYALTY_DAILY_CRON", defaults.daily_cron),
        standby_replicas=int(env.get("LOYALTY_STANDBY_REPLICAS", defaults.standby_replicas)),
        batch_max=int(env.get("LOYALTY_BATCH_MAX", defaults.batch_max)),
        fetch_max_wait_ms=int(env.get("LOYALTY_FETCH_MAX_WAIT_MS", defaults.fetch_max_wait_ms)),
        max_partition_idle_ms=int(
            env.get("LOYALTY_MAX_PARTITION_IDLE_MS", defaults.max_partition_idle_ms)
        ),
        log_level=env.get("LOYALTY_LOG_LEVEL", defaults.log_level),
        peer_hosts=_host_list(env["LOYALTY_PEER_HOSTS"])
        if "LOYALTY_PEER_HOSTS" in env
        else defaults.peer_hosts,
        peer_token=env.get("LOYALTY_PEER_TOKEN", defaults.peer_token),
        http_timeout_s=float(env.get("LOYALTY_HTTP_TIMEOUT_S", defaults.http_timeout_s)),
        shutdown_grace_s=float(env.get("LOYALTY_SHUTDOWN_GRACE_S", defaults.shutdown_grace_s)),
        deadletter_retention_days=float(
            env.get("LOYALTY_DEADLETTER_RETENTION_DAYS", defaults.deadletter_retention_days)
        ),
        topics=_topic_names(env),
    )


def to_env(settings: Settings) -> dict[str, str]:
    """The environment variables that make :func:`from_env` return ``settings``."""
    env = {
        "LOYALTY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LOYALTY_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "LOYALTY_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "LOYALTY_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "LOYALTY_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
        "LOYALTY_DATA_DIR": str(settings.data_dir),
        "LOYALTY_WEB_PORT": str(settings.web_port),
        "LOYALTY_WEB_HOST": settings.web_host,
        "LOYALTY_WEB_URL": settings.web_url,
        "LOYALTY_PROGRAM": str(settings.program_path),
        "LOYALTY_APP_ID": settings.app_id,
        "LOYALTY_PARTITIONS": str(settings.partitions),
        "LOYALTY_REPLICATION_FACTOR": str(settings.replication_factor),
        "LOYALTY_MAX_EVENT_BYTES": str(settings.max_event_bytes),
        "LOYALTY_MAX_STATE_BYTES": str(settings.max_state_bytes),
        "LOYALTY_MAX_FUTURE_SKEW_S": str(settings.max_future_skew_s),
        "LOYALTY_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
        "LOYALTY_DAILY_CRON": settings.daily_cron,
        "LOYALTY_STANDBY_REPLICAS": str(settings.standby_replicas),
        "LOYALTY_BATCH_MAX": str(settings.batch_max),
        "LOYALTY_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
        "LOYALTY_MAX_PARTITION_IDLE_MS": str(settings.max_partition_idle_ms),
        "LOYALTY_LOG_LEVEL": settings.log_level,
        "LOYALTY_PEER_HOSTS": ",".join(settings.peer_hosts),
        "LOYALTY_PEER_TOKEN": settings.peer_token,
        "LOYALTY_HTTP_TIMEOUT_S": str(settings.http_timeout_s),
        "LOYALTY_SHUTDOWN_GRACE_S": str(settings.shutdown_grace_s),
        "LOYALTY_DEADLETTER_RETENTION_DAYS": str(settings.deadletter_retention_days),
    }
    for name in TopicNames.__dataclass_fields__:
        env[f"LOYALTY_TOPIC_{name.upper()}"] = getattr(settings.topics, name)
    return env
