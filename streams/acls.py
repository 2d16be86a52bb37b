"""Kafka ACLs that keep the engine's internal topics to its workers (``loyalty kafka acls``).

:func:`acl_plan` is the whole policy as plain values, derived from the topic names and the
app id of :class:`~streams.settings.Settings`; :func:`apply_plan` creates what a broker is
missing. The roles (docs: ``docs/security.md``, "Kafka ACLs"):

- **worker**: reads the inputs, reads and writes the internal topics, writes the outputs,
  owns every topic whose name starts with ``<app_id>-`` (the table changelogs and Faust's
  leader topic), creates the engine's topics (a worker runs ``ensure_topics`` at start), and
  consumes in the group ``<app_id>``. No other principal may write an internal topic, so a
  forged referral, hold or stock command cannot enter the pipeline.
- **pos**: writes ``loyalty.transactions``, nothing else.
- **station**: writes ``loyalty.redemptions`` (station redemption requests, fulfilments and
  cancellations). A separate principal by default; a deployment whose POS software also
  sends redemptions passes the POS principal for both.
- **crm**: writes ``loyalty.members``.
- **operator**: writes ``loyalty.catalog`` (``loyalty catalog load``) and ``loyalty.daily``
  (``loyalty daily``), and may describe and create the engine's topics (``loyalty topics``;
  ``daily`` and ``catalog load`` check the topics first).
- **reader**: a downstream service (notifications, CRM sync) reads the outputs ledger,
  rewards, notifications and segments in its own consumer group. The dead-letter topic is
  left out: it holds rejected originals, personal data among them.

No principal gets IDEMPOTENT_WRITE on the cluster: since Kafka 2.8 (KIP-679) WRITE on any
topic lets a producer be idempotent, which kafka-python's producers are by default.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

from loyalty.streams.settings import Settings

Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE"]
Resource = Literal["TOPIC", "GROUP"]
Pattern = Literal["LITERAL", "PREFIXED"]

ANY_HOST = "*"
_SETTLE_POLL_S = 0.1


@dataclass(frozen=True)
class Grant:
    """One ALLOW ACL: ``principal`` may do ``operation`` on a resource from any host."""

    principal: str
    operation: Operation
    resource_type: Resource
    resource_name: str
    pattern: Pattern = "LITERAL"
    """``PREFIXED``: every resource whose name starts with ``resource_name``."""

    def __str__(self) -> str:
        kind = "prefix" if self.pattern == "PREFIXED" else "name"
        return (
            f"{self.principal:<22} ALLOW {self.operation:<8} "
            f"{self.resource_type.lower():<5} {kind} {self.resource_name}"
        )


@dataclass(frozen=True)
class Principals:
    """Who plays each role; Kafka principals, ``User:<name>`` for SASL users."""

    worker: str = "User:worker"
    pos: str = "User:pos"
    station: str = "User:station"
    crm: str = "User:crm"
    operator: str = "User:operator"
    reader: str = "User:notifications"
    reader_group: str = "notifications"
    """The consumer group of the reader role (never the workers' group ``<app_id>``: a member
    of that group would be handed the workers' partitions)."""

    def __post_init__(self) -> None:
        for role in ("worker", "pos", "station", "crm", "operator", "reader"):
            kind, _, name = getattr(self, role).partition(":")
            if not kind or not name:
                raise ValueError(
                    f"the {role} principal {getattr(self, role)!r} is not of the form "
                    "Type:name (e.g. User:worker)"
                )
        if not self.reader_group:
            raise ValueError("the reader's consumer group must not be empty")


def internal_topics(settings: Settings) -> list[str]:
    """Topics only the workers may write (besides ``<app_id>-*``), ``daily`` excepted:
    the operator's ``loyalty daily`` writes it too."""
    names = settings.topics
    return [
        names.rekeyed,
        names.members_rekeyed,
        names.referrals,
        names.member_commands,
        names.redemption_steps,
        names.stock_commands,
    ]


def output_topics(settings: Settings) -> list[str]:
    """Topics only the workers write and downstream services read (dead letters aside)."""
    names = settings.topics
    return [names.ledger, names.rewards, names.notifications, names.segments]


def input_topics(settings: Settings) -> dict[str, str]:
    """Each input topic the workers read, and the role that writes it."""
    names = settings.topics
    return {
        names.transactions: "pos",
        names.redemptions: "station",
        names.members: "crm",
        names.catalog: "operator",
    }


def engine_topics(settings: Settings) -> list[str]:
    """Every topic named in ``settings.topics`` (the changelogs are under ``<app_id>-``)."""
    names = settings.topics
    return [getattr(names, field) for field in type(names).__dataclass_fields__]


def app_prefix(settings: Settings) -> str:
    """The name prefix of the topics Faust derives from the app id: table changelogs
    ``<app_id>-<table>-changelog`` and the leader topic ``<app_id>-__assignor-__leader``."""
    return f"{settings.app_id}-"


def acl_plan(settings: Settings, principals: Principals | None = None) -> list[Grant]:
    """Every ACL the engine needs on a broker whose authorizer denies what no ACL allows."""
    who = principals or Principals()
    if who.reader_group == settings.app_id:
        raise ValueError(
            f"the reader's consumer group must not be the workers' ({settings.app_id})"
        )
    names = settings.topics
    prefix = app_prefix(settings)
    worker = who.worker
    grants: list[Grant] = []

    def topic(principal: str, operation: Operation, *topics: str) -> None:
        grants.extend(Grant(principal, operation, "TOPIC", name) for name in topics)

    def prefixed(principal: str, operation: Operation) -> None:
        grants.append(Grant(principal, operation, "TOPIC", prefix, "PREFIXED"))

    # The workers.
    topic(worker, "READ", *input_topics(settings), names.daily, *internal_topics(settings))
    topic(worker, "WRITE", names.daily, *internal_topics(settings), *output_topics(settings))
    topic(worker, "WRITE", names.deadletter)
    prefixed(worker, "READ")
    prefixed(worker, "WRITE")
    prefixed(worker, "CREATE")
    topic(worker, "CREATE", *engine_topics(settings))
    grants.append(Grant(worker, "READ", "GROUP", settings.app_id))

    # The producers at the edges: one input topic each.
    role_principal = {"pos": who.pos, "station": who.station, "crm": who.crm}
    for name, role in input_topics(settings).items():
        if role in role_principal:
            topic(role_principal[role], "WRITE", name)

    # The operator.
    topic(who.operator, "WRITE", names.catalog, names.daily)
    topic(who.operator, "DESCRIBE", *engine_topics(settings))
    prefixed(who.operator, "DESCRIBE")
    topic(who.operator, "CREATE", *engine_topics(settings))
    prefixed(who.operator, "CREATE")

    # Downstream readers.
    topic(who.reader, "READ", *output_topics(settings))
    grants.append(Grant(who.reader, "READ", "GROUP", who.reader_group))

    return list(dict.fromkeys(grants))  # one role may be played by several principals


def writers(plan: Iterable[Grant], topic: str) -> set[str]:
    """The principals ``plan`` lets write ``topic`` (through a literal or a prefix grant)."""
    return {
        grant.principal
        for grant in plan
        if grant.operation == "WRITE"
        and grant.resource_type == "TOPIC"
        and (
            topic.startswith(grant.resource_name)
            if grant.pattern == "PREFIXED"
            else grant.resource_name == topic
        )
    }


# --- applying the plan ------------------------------------------------------------------


def to_acl(grant: Grant) -> ACL:
    """The kafka-python ACL of ``grant``."""
    return ACL(
        principal=grant.principal,
        host=ANY_HOST,
        operation=ACLOperation[grant.operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(
            ResourceType[grant.resource_type],
            grant.resource_name,
            ACLResourcePatternType[grant.pattern],
        ),
    )


class AclError(RuntimeError):
    """The broker refused to create some ACLs."""


def existing_grants(admin: KafkaAdminClient) -> set[Grant]:
    """The ALLOW ACLs for any host on topics and groups that ``admin``'s broker holds."""
    every = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acls, _ = admin.describe_acls(every)
    found = set()
    for acl in acls:
        pattern = acl.resource_pattern
        if (
            acl.permission_type == ACLPermissionType.ALLOW
            and acl.host == ANY_HOST
            and pattern.resource_type.name in ("TOPIC", "GROUP")
            and acl.operation.name in ("READ", "WRITE", "CREATE", "DESCRIBE")
            and pattern.pattern_type.name in ("LITERAL", "PREFIXED")
        ):
            found.add(
                Grant(
                    acl.principal,
                    acl.operation.name,
                    pattern.resource_type.name,
                    pattern.resource_name,
                    pattern.pattern_type.name,
                )
            )
    return found


def apply_plan(settings: Settings, plan: list[Grant], timeout_s: float = 30.0) -> list[Grant]:
    """Create the grants of ``plan`` that the broker does not hold yet; return them.

    Returns once the broker it asked enforces every grant of ``plan``: the controller
    accepts new ACLs before the brokers have read them from the metadata log. Idempotent: a
    second run creates nothing. Never deletes an ACL (a grant left from an older plan stays
    until removed with ``kafka-acls.sh --remove``). Connects with the security options of
    ``settings`` (``LOYALTY_KAFKA_SECURITY_PROTOCOL`` and the SASL login); the principal must
    be a super user or hold ALTER on the cluster. Raises :class:`AclError` if the broker
    refuses a grant or does not enforce them all within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id=f"{settings.app_id}-acls",
        request_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_security_options(),
    )
    try:
        present = existing_grants(admin)
        missing = [grant for grant in plan if grant not in present]
        if missing:
            result = admin.create_acls([to_acl(grant) for grant in missing])
            if result["failed"]:
                raise AclError(
                    f"the broker refused {len(result['failed'])} of {len(missing)} ACLs: "
                    + ", ".join(sorted({repr(error) for error in result["failed"]}))
                )
        while not present.issuperset(missing):
            if time.monotonic() >= deadline:
                raise AclError(
                    f"{len(set(missing) - present)} new ACLs not in force after {timeout_s} s"
                )
            time.sleep(_SETTLE_POLL_S)
            present = existing_grants(admin)
        return missing
    finally:
        admin.close()
