"""The Faust app: its configuration and how a failed agent is supervised.

The agents are registered on it by ``agents.topology``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust
from mode import ServiceT
from mode.supervisors import OneForOneSupervisor

from loyalty.streams import faust_patches
from loyalty.streams.settings import Settings
from loyalty.streams.topics import MAX_MESSAGE_BYTES


class AgentSupervisor(OneForOneSupervisor):
    """An agent that failed crashes the worker, which exits (``cli.worker``).

    Faust's default supervisor restarts a failed agent on the same stream: the events it had
    taken are never acknowledged, and a partition's committed offset stops below the first
    of them (Faust commits up to the first gap) while processing goes on. A restarted worker
    processes them again from the last commit instead. An agent cancelled by a rebalance is
    still restarted, as Faust expects."""

    async def restart_service(self, service: ServiceT) -> None:
        reason = service.crash_reason
        if reason is None or isinstance(reason, asyncio.CancelledError):
            await super().restart_service(service)
        else:
            await self.crash(reason)


def new_app(settings: Settings, middlewares: Sequence[Any] = ()) -> faust.App:
    """The Faust app of a worker, configured from ``settings``, with no agent yet
    (``agents.topology`` registers them); ``middlewares`` guard its web server."""
    faust_patches.apply(settings.fetch_max_wait_ms)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The account agent hands a whole batch to the producer at once, so a short linger
        # is enough for its records to share produce requests; each batch waits for one
        # changelog round trip, which a longer linger would lengthen.
        producer_linger_ms=1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 5,
        producer_max_request_size=MAX_MESSAGE_BYTES + 65536,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # What this worker advertises to the others in the group's assignment metadata:
        # they forward member requests there (agents.profiles).
        canonical_url=settings.advertised_url,
        # Faust's own pages read any table key (/table), list the workers (/router) or the
        # worker's internals: none is served (agents.web also 404s any page not ours).
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        web_application_options={"middlewares": list(middlewares)},
        autodiscover=False,
        agent_supervisor=AgentSupervisor,
    )
    faust_patches.time_out_http_connections(app, settings.http_timeout_s)
    return app
