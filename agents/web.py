"""HTTP pages served by every worker on ``LOYALTY_WEB_PORT`` besides the member pages
(``agents.profiles``), and the guard in front of every page.

Faust serves pages of its own besides the app's (``/table/{table}/{key}/`` reads any key
of any table, ``/router/`` lists the workers' URLs, ``/``, ``/graph``, ``/assignment``,
``/performance``); ``streams.app`` turns them off, and the guard answers 404 for every
path that is not one of ours, so one a later Faust adds is not served either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from aiohttp import web as aiohttp_web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from loyalty.agents.openapi import INVALID_REQUEST_TARGET, NOT_FOUND, OPENAPI_DOCUMENT

PUBLIC_PAGES = ("/metrics", "/openapi.json", "/catalog", "/members/", "/health", "/health/")
"""Paths of the pages a worker serves: exact, or a prefix when ending with ``/``."""


def is_public_page(path: str) -> bool:
    """Whether ``path`` (decoded, as routed) may be served."""
    return any(
        path.startswith(page) if page.endswith("/") else path == page for page in PUBLIC_PAGES
    )


def request_target_error(raw_target: str) -> str | None:
    """Why a request target is refused, or None for the origin form (``/path?query``).

    aiohttp routes an absolute-form target (``GET http://x/members/m HTTP/1.1``, meant for
    proxies) by its path; answering it would let the host of the URL differ from the one
    the client connected to, so it is a 400, like every form but the origin form."""
    if raw_target.startswith("/"):
        return None
    return "the request target must be a path (origin form), not an absolute URL"


def _error(status: int, code: str, message: str) -> aiohttp_web.Response:
    return aiohttp_web.Response(
        body=orjson.dumps({"error": code, "message": message}),
        status=status,
        content_type="application/json",
    )


@aiohttp_web.middleware
async def guard(
    request: aiohttp_web.Request,
    handler: Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]],
) -> aiohttp_web.StreamResponse:
    """400 for a request target that is not a path, 404 for a page that is not ours."""
    refused = request_target_error(request.raw_path)
    if refused is not None:
        return _error(400, INVALID_REQUEST_TARGET, refused)
    if not is_public_page(request.path):
        return _error(404, NOT_FOUND, "no such page")
    return await handler(request)


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
