"""HTTP pages served by every worker on ``LOYALTY_WEB_PORT``."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def register(app: faust.App) -> None:
    """``/metrics`` (Prometheus text format)."""

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; Prometheus' constant carries one.
        content_type, _, _ = CONTENT_TYPE_LATEST.partition(";")
        return web.bytes(generate_latest(REGISTRY), content_type=content_type)
