"""HTTP pages served by every worker on ``LOYALTY_WEB_PORT`` besides the member pages
(``agents.profiles``)."""

from __future__ import annotations

from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams.openapi import OPENAPI_DOCUMENT


def register(app: faust.App) -> None:
    """``/metrics`` (Prometheus text format) and ``/openapi.json`` (the API's description)."""
    openapi = orjson.dumps(OPENAPI_DOCUMENT)

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; Prometheus' constant carries one.
        content_type, _, _ = CONTENT_TYPE_LATEST.partition(";")
        return web.bytes(generate_latest(REGISTRY), content_type=content_type)

    @app.page("/openapi.json")
    async def openapi_document(web: Any, request: Any) -> Any:
        return web.bytes(openapi, content_type="application/json")
