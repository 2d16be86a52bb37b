"""The ACL plan of ``loyalty kafka acls``: who may write, read and create which topic."""

import pytest
from kafka.admin import ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourceType

from loyalty.cli.main import main
from loyalty.streams.acls import (
    Grant,
    Principals,
    acl_plan,
    engine_topics,
    internal_topics,
    output_topics,
    to_acl,
    writers,
)
from loyalty.streams.settings import Settings, TopicNames, from_env, to_env
from loyalty.streams.topics import TABLE_NAMES, changelog_topic_name

SETTINGS = Settings()
TOPICS = SETTINGS.topics
WHO = Principals()
PLAN = acl_plan(SETTINGS)


def _topics_of(principal: str, operation: str, plan: list[Grant] = PLAN) -> set[str]:
    return {
        grant.resource_name
        for grant in plan
        if grant.principal == principal
        and grant.operation == operation
        and grant.resource_type == "TOPIC"
        and grant.pattern == "LITERAL"
    }


def _changelogs() -> list[str]:
    return [changelog_topic_name(SETTINGS.app_id, table) for table in TABLE_NAMES]


def test_the_internal_topics_are_the_ones_of_the_issue():
    assert set(internal_topics(SETTINGS)) == {
        "loyalty.transactions.rekeyed",
        "loyalty.members.rekeyed",
        "loyalty.referrals",
        "loyalty.member-commands",
        "loyalty.redemption-steps",
        "loyalty.stock-commands",
    }


@pytest.mark.parametrize(
    "topic",
    [
        *internal_topics(SETTINGS),
        *output_topics(SETTINGS),
        TOPICS.deadletter,
        *_changelogs(),
        f"{SETTINGS.app_id}-__assignor-__leader",
    ],
)
def test_only_the_workers_write_internal_output_and_changelog_topics(topic):
    assert writers(PLAN, topic) == {WHO.worker}


def test_the_daily_commands_come_from_the_workers_cron_and_the_operator():
    assert writers(PLAN, TOPICS.daily) == {WHO.worker, WHO.operator}


@pytest.mark.parametrize(
    ("principal", "topics"),
    [
        (WHO.pos, {"loyalty.transactions"}),
        (WHO.station, {"loyalty.redemptions"}),
        (WHO.crm, {"loyalty.members"}),
        (WHO.operator, {"loyalty.catalog", "loyalty.daily"}),
        (WHO.reader, set()),
    ],
)
def test_each_edge_principal_writes_only_its_input(principal, topics):
    written = {topic for topic in engine_topics(SETTINGS) if principal in writers(PLAN, topic)}
    assert written == topics
    prefixed = {g.operation for g in PLAN if g.principal == principal and g.pattern == "PREFIXED"}
    assert not prefixed & {"READ", "WRITE"}


def test_the_pos_principal_has_nothing_but_its_write():
    assert [grant for grant in PLAN if grant.principal == WHO.pos] == [
        Grant(WHO.pos, "WRITE", "TOPIC", TOPICS.transactions)
    ]


def test_every_topic_is_written_by_someone_and_used_by_the_workers():
    for topic in engine_topics(SETTINGS):
        assert writers(PLAN, topic), topic
        assert topic in _topics_of(WHO.worker, "READ") | _topics_of(WHO.worker, "WRITE"), topic


def test_the_workers_read_their_inputs_internal_topics_and_changelogs():
    reads = _topics_of(WHO.worker, "READ")
    assert {
        TOPICS.transactions,
        TOPICS.members,
        TOPICS.redemptions,
        TOPICS.catalog,
        TOPICS.daily,
        *internal_topics(SETTINGS),
    } <= reads
    assert not reads & {*output_topics(SETTINGS), TOPICS.deadletter}
    changelog_prefix = Grant(WHO.worker, "READ", "TOPIC", f"{SETTINGS.app_id}-", "PREFIXED")
    assert changelog_prefix in PLAN


def test_the_workers_may_create_every_topic_they_declare():
    assert _topics_of(WHO.worker, "CREATE") == set(engine_topics(SETTINGS))
    assert Grant(WHO.worker, "CREATE", "TOPIC", f"{SETTINGS.app_id}-", "PREFIXED") in PLAN


def test_the_operator_sees_and_may_create_the_topics_for_loyalty_topics():
    assert _topics_of(WHO.operator, "DESCRIBE") == set(engine_topics(SETTINGS))
    assert _topics_of(WHO.operator, "CREATE") == set(engine_topics(SETTINGS))


def test_only_the_workers_join_the_workers_group():
    groups = [(g.principal, g.resource_name) for g in PLAN if g.resource_type == "GROUP"]
    assert groups == [(WHO.worker, SETTINGS.app_id), (WHO.reader, WHO.reader_group)]
    assert all(g.pattern == "LITERAL" for g in PLAN if g.resource_type == "GROUP")


def test_the_reader_reads_the_outputs_but_not_the_dead_letters():
    assert _topics_of(WHO.reader, "READ") == set(output_topics(SETTINGS))


def test_the_reader_group_may_not_be_the_workers_group():
    with pytest.raises(ValueError, match="workers'"):
        acl_plan(SETTINGS, Principals(reader_group=SETTINGS.app_id))


def test_renamed_topics_and_app_id_are_followed():
    settings = Settings(app_id="acme", topics=TopicNames(member_commands="acme.commands"))
    plan = acl_plan(settings)

    assert writers(plan, "acme.commands") == {WHO.worker}
    assert writers(plan, "loyalty.member-commands") == set()
    assert writers(plan, "acme-member_to_state-changelog") == {WHO.worker}
    assert writers(plan, "loyalty-stream-member_to_state-changelog") == set()


def test_one_principal_may_play_two_roles_without_duplicate_grants():
    plan = acl_plan(SETTINGS, Principals(station="User:pos"))

    assert len(plan) == len(set(plan))
    assert _topics_of("User:pos", "WRITE", plan) == {TOPICS.transactions, TOPICS.redemptions}


@pytest.mark.parametrize("principal", ["worker", "User:", ":worker", ""])
def test_a_principal_must_name_its_type(principal):
    with pytest.raises(ValueError, match="Type:name"):
        Principals(worker=principal)


def test_a_grant_becomes_an_allow_acl_for_any_host():
    acl = to_acl(Grant(WHO.worker, "CREATE", "TOPIC", "loyalty-stream-", "PREFIXED"))

    assert acl.principal == "User:worker"
    assert acl.host == "*"
    assert acl.operation == ACLOperation.CREATE
    assert acl.permission_type == ACLPermissionType.ALLOW
    assert acl.resource_pattern.resource_type == ResourceType.TOPIC
    assert acl.resource_pattern.resource_name == "loyalty-stream-"
    assert acl.resource_pattern.pattern_type == ACLResourcePatternType.PREFIXED


def test_the_command_prints_one_line_per_grant_without_a_broker(capsys, monkeypatch):
    monkeypatch.setenv("LOYALTY_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens there

    assert main(["kafka", "acls", "--pos-principal", "User:pump-42"]) == 0

    lines = capsys.readouterr().out.splitlines()
    plan = acl_plan(SETTINGS, Principals(pos="User:pump-42"))
    assert lines[:-1] == [str(grant) for grant in plan]
    assert str(Grant("User:pump-42", "WRITE", "TOPIC", TOPICS.transactions)) in lines
    assert lines[-1].startswith(f"{len(plan)} ACLs planned")


def test_the_command_rejects_a_malformed_principal(capsys):
    assert main(["kafka", "acls", "--crm-principal", "crm"]) == 2
    assert "Type:name" in capsys.readouterr().err


def test_the_sasl_login_is_read_from_the_environment_and_kept_out_of_repr():
    settings = from_env(
        {
            "LOYALTY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LOYALTY_KAFKA_SASL_MECHANISM": "PLAIN",
            "LOYALTY_KAFKA_SASL_USERNAME": "admin",
            "LOYALTY_KAFKA_SASL_PASSWORD": "s3cret",
        }
    )

    assert settings.kafka_security_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "admin",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(settings)
    assert from_env(to_env(settings)) == settings
    assert Settings().kafka_security_options() == {}


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ({"worker": "w"}, "must include the super user 'admin'"),
        ({"admin": 'a" user_evil="x'}, "only letters, digits"),
        ({"admin": "a", "po;s": "p"}, "only letters, digits"),
    ],
)
def test_the_local_sasl_broker_refuses_users_it_cannot_write_safely(tmp_path, users, message):
    from loyalty.localkafka import broker

    with pytest.raises(broker.BrokerError, match=message):
        broker.start(port=broker.free_port(), data_dir=tmp_path, sasl_users=users)
    assert not (tmp_path / "server.properties").exists()
