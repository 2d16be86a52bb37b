"""Health pages of every worker, for Docker's healthcheck and Kubernetes' probes
(docs/operations.md):

- ``GET /health/live``: 200 while the worker's event loop answers and nothing crashed (a
  crashed worker exits on its own within ``LOYALTY_SHUTDOWN_GRACE_S``: ``cli.worker``);
- ``GET /health/ready``: 200 only when the worker is doing its share of the work: it holds
  at least one partition of the member input topics, its tables are recovered and its
  catalog view is read up; else 503, naming the failing conditions.

A worker in a group with more workers than partitions gets no partition and stays not
ready: it is a spare, not a failure of the probe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from faust.tables.manager import TableManager

from loyalty.agents.openapi import READINESS_CHECKS
from loyalty.core.catalog import CatalogView

LIVE = "/health/live"
READY = "/health/ready"


@dataclass(frozen=True)
class Readiness:
    """What ``/health/ready`` checks, each true when fine."""

    running: bool
    """The worker is neither stopping nor crashed."""
    partitions_assigned: bool
    """It holds at least one active partition of the member input topics, in its group's
    last assignment and in its consumer's current one."""
    tables_recovered: bool
    """Its tables have been read up from their changelogs since the last rebalance, which
    is over."""
    catalog_ready: bool
    """Its catalog view has read the catalog and the reserved stock up to their end."""
    member_partitions: int = 0
    """How many partitions of the member input topics it holds (informational)."""

    @property
    def failing(self) -> list[str]:
        """The names of the conditions that are false, in the documented order."""
        return [name for name in READINESS_CHECKS if not getattr(self, name)]

    def answer(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body of ``/health/ready``."""
        failing = self.failing
        return (
            503 if failing else 200,
            {
                "status": "not_ready" if failing else "ready",
                "failing": failing,
                "member_partitions": self.member_partitions,
            },
        )


def member_partitions(app: faust.App, member_topics: Iterable[str]) -> int:
    """Active partitions of ``member_topics`` that both the group's last assignment and the
    consumer give this worker (a worker that fell out of its group keeps a stale assignment
    in Faust's assignor, but its consumer holds nothing)."""
    names = set(member_topics)
    assigned = {tp for tp in app.assignor.assigned_actives() if tp.topic in names}
    if not assigned:
        return 0
    return len(assigned & set(app.consumer.assignment()))


def readiness(app: faust.App, member_topics: Iterable[str], catalog: CatalogView) -> Readiness:
    """The readiness of the worker running ``app``."""
    running = not app.should_stop
    partitions = member_partitions(app, member_topics) if running else 0
    recovery = cast(TableManager, app.tables).recovery
    return Readiness(
        running=running,
        partitions_assigned=partitions > 0,
        tables_recovered=recovery.completed.is_set()
        and not app.in_recovery
        and not app.rebalancing,
        catalog_ready=catalog.ready,
        member_partitions=partitions,
    )


def register(app: faust.App, member_topics: Iterable[str], catalog: CatalogView) -> None:
    """Serve ``/health/live`` and ``/health/ready`` on ``app``'s web server."""
    topics = tuple(member_topics)

    @app.page(LIVE)
    async def live(web: Any, request: Any) -> Any:
        status, body = (503, {"status": "crashed"}) if app.crashed else (200, {"status": "live"})
        return web.bytes(orjson.dumps(body), content_type="application/json", status=status)

    @app.page(READY)
    async def ready(web: Any, request: Any) -> Any:
        status, body = readiness(app, topics, catalog).answer()
        return web.bytes(orjson.dumps(body), content_type="application/json", status=status)
