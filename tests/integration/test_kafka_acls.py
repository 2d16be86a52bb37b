"""``loyalty kafka acls --apply`` on a local broker with SASL/PLAIN and the StandardAuthorizer:
each principal writes exactly the topics of its role, and the internal topics are the workers'
alone."""

import time
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from loyalty.cli.main import main
from loyalty.localkafka import broker
from loyalty.localkafka.broker import LOCAL_SASL_USERS, sasl_client_options
from loyalty.streams.acls import Grant, acl_plan, apply_plan
from loyalty.streams.settings import Settings

TOPICS = Settings().topics


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker.BrokerStatus]:
    """A second broker, on its own port and data directory, that authenticates and
    authorizes every client; the engine's topics exist (created by the super user)."""
    data_dir = tmp_path_factory.mktemp("kafka-sasl")
    started = broker.start(port=broker.free_port(), data_dir=data_dir, sasl_users=LOCAL_SASL_USERS)
    try:
        assert started.sasl and started.bootstrap is not None
        admin = KafkaAdminClient(bootstrap_servers=started.bootstrap, **_login("admin"))
        try:
            admin.create_topics(
                [NewTopic(name, num_partitions=1, replication_factor=1) for name in _topics()]
            )
        finally:
            admin.close()
        yield started
    finally:
        broker.stop(data_dir)


@pytest.fixture(scope="module")
def sasl_bootstrap(sasl_broker: broker.BrokerStatus) -> str:
    assert sasl_broker.bootstrap is not None
    return sasl_broker.bootstrap


def _topics() -> list[str]:
    return [getattr(TOPICS, name) for name in type(TOPICS).__dataclass_fields__]


def _login(user: str) -> dict[str, str]:
    return sasl_client_options(user, LOCAL_SASL_USERS[user])


def _admin_env(bootstrap: str) -> dict[str, str]:
    return {
        "LOYALTY_KAFKA_BOOTSTRAP": bootstrap,
        "LOYALTY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LOYALTY_KAFKA_SASL_MECHANISM": "PLAIN",
        "LOYALTY_KAFKA_SASL_USERNAME": "admin",
        "LOYALTY_KAFKA_SASL_PASSWORD": LOCAL_SASL_USERS["admin"],
    }


def _send(bootstrap: str, user: str, topic: str) -> KafkaError | None:
    """Send one record to ``topic`` as ``user``; the error Kafka answered, or None."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, max_block_ms=10_000, acks="all", **_login(user)
    )
    try:
        producer.send(topic, key=b"M-1", value=b"{}").get(timeout=10)
    except KafkaError as error:
        return error
    finally:
        producer.close(timeout=5)
    return None


@pytest.fixture(scope="module")
def acls_applied(sasl_bootstrap: str) -> str:
    """The plan applied through the CLI, as the super user from LOYALTY_* variables."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in _admin_env(sasl_bootstrap).items():
            env.setenv(name, value)
        assert main(["kafka", "acls", "--apply"]) == 0
    return sasl_bootstrap


def test_before_any_acl_a_principal_may_write_nothing(sasl_bootstrap: str) -> None:
    # Ordered before the fixture that applies the plan (module scope, file order).
    assert isinstance(_send(sasl_bootstrap, "pos", TOPICS.transactions), KafkaError)


def test_applying_the_plan_twice_creates_nothing_the_second_time(
    acls_applied: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _admin_env(acls_applied).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()

    assert main(["kafka", "acls", "--apply"]) == 0

    plan = acl_plan(Settings())
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"0 ACLs created, {len(plan)} already present"
    )


TOPIC_REFUSED = "TopicAuthorizationFailedError"
# A principal with no WRITE grant at all cannot even start an idempotent producer (KIP-679).
NO_PRODUCER = "ClusterAuthorizationFailedError"


@pytest.mark.parametrize(
    ("user", "topic", "refusal"),
    [
        ("pos", TOPICS.transactions, None),
        ("pos", TOPICS.member_commands, TOPIC_REFUSED),
        ("pos", TOPICS.rekeyed, TOPIC_REFUSED),
        ("pos", TOPICS.redemptions, TOPIC_REFUSED),
        ("crm", TOPICS.members, None),
        ("crm", TOPICS.transactions, TOPIC_REFUSED),
        ("station", TOPICS.redemptions, None),
        ("operator", TOPICS.catalog, None),
        ("operator", TOPICS.daily, None),
        ("operator", TOPICS.stock_commands, TOPIC_REFUSED),
        ("worker", TOPICS.member_commands, None),
        ("worker", TOPICS.ledger, None),
        ("worker", TOPICS.transactions, TOPIC_REFUSED),
        ("notifications", TOPICS.notifications, NO_PRODUCER),
    ],
)
def test_each_principal_writes_only_the_topics_of_its_role(
    acls_applied: str, user: str, topic: str, refusal: str | None
) -> None:
    error = _send(acls_applied, user, topic)

    if refusal is None:
        assert error is None
    elif refusal == TOPIC_REFUSED:
        assert isinstance(error, TopicAuthorizationFailedError)
    else:
        assert error is not None and refusal in str(error)


def test_apply_plan_as_a_principal_without_rights_is_refused(acls_applied: str) -> None:
    settings = Settings(
        kafka_bootstrap=acls_applied,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="pos",
        kafka_sasl_password=LOCAL_SASL_USERS["pos"],
    )
    forged = [Grant("User:pos", "WRITE", "TOPIC", TOPICS.member_commands)]

    with pytest.raises(ClusterAuthorizationFailedError):
        apply_plan(settings, forged)

    assert isinstance(_send(acls_applied, "pos", TOPICS.member_commands), KafkaError)


def test_the_sasl_broker_refuses_a_client_that_does_not_log_in(acls_applied: str) -> None:
    with pytest.raises(KafkaError):  # the SASL listener never answers a PLAINTEXT client
        KafkaProducer(bootstrap_servers=acls_applied, bootstrap_timeout_ms=3000).close(timeout=1)


def test_start_refuses_to_reuse_a_sasl_broker_without_sasl(
    sasl_broker: broker.BrokerStatus,
) -> None:
    assert broker.status(sasl_broker.data_dir).sasl

    with pytest.raises(broker.BrokerError, match="runs with SASL"):
        broker.start(port=sasl_broker.port or 0, data_dir=sasl_broker.data_dir)


def test_only_the_workers_consume_in_the_workers_group(acls_applied: str) -> None:
    app_id = Settings().app_id
    assert _send(acls_applied, "worker", TOPICS.member_commands) is None

    worker = _consumer(acls_applied, "worker", app_id, TOPICS.member_commands)
    try:
        assert _poll_one(worker) is not None
        worker.commit()
    finally:
        worker.close()

    # A process holding the POS login cannot join the group and be handed its partitions.
    intruder = _consumer(acls_applied, "pos", app_id, TOPICS.transactions)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            _poll_one(intruder)
    finally:
        intruder.close()


def test_changelog_topics_are_created_by_workers_and_operators_only(acls_applied: str) -> None:
    changelog = f"{Settings().app_id}-new_table-changelog"

    def create(user: str, name: str) -> None:
        admin = KafkaAdminClient(bootstrap_servers=acls_applied, **_login(user))
        try:
            admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        finally:
            admin.close()

    with pytest.raises(TopicAuthorizationFailedError):
        create("pos", changelog)
    create("worker", changelog)
    create("operator", f"{changelog}-2")

    operator = KafkaAdminClient(bootstrap_servers=acls_applied, **_login("operator"))
    try:  # what `loyalty topics` needs: every engine topic is visible, so none is re-created
        assert {*_topics(), changelog, f"{changelog}-2"} <= set(operator.list_topics())
    finally:
        operator.close()


def _consumer(bootstrap: str, user: str, group: str, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **_login(user),
    )
    consumer.subscribe([topic])
    return consumer


def _poll_one(consumer: KafkaConsumer, timeout_s: float = 20.0) -> bytes | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            return bytes(records[0].value)
    return None
