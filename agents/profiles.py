"""The member profile API, served by every worker: ``GET /members/{member_id}``,
``GET /members/{member_id}/ledger`` and ``GET /members/{member_id}/redemptions`` (described
in ``streams.openapi``).

A member's state is one value of ``member_to_state``, in the partition the engine places
the member in (``owner_partition``), held as active by one worker of the group. That worker
answers from its table; any other forwards the request to it, at the URL it advertises
(``LOYALTY_WEB_URL``, Faust's ``canonical_url``) as the assignor's table metadata records
it, and passes its answer back.

Faust's ``app.table_route`` routes the same way in principle, and computes the same
partition (the key's UTF-8 bytes through aiokafka's murmur2 partitioner), but does not fit:
it reads the partition count from the producer's metadata of the changelog topic, which a
worker whose producer has not sent to that topic lacks (a TypeError: a 500); it answers
"owner unknown" with its own 503 body and no ``Retry-After``, and an unreachable owner with
a 500; it drops the owner's headers; and two workers that disagree about the owner while an
assignment changes would forward a request to each other again and again. Here the
partition comes from the function that places members, a forwarded request is never
forwarded again, and whatever stands between a request and its owner's answer is a 503
with ``Retry-After``.

What to answer is decided by pure functions of the request, the member's stored value, the
time and the worker's view of the assignment; the pages below only do the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import faust
import orjson
from faust.types import TableT
from yarl import URL

from agents.accounts import Clock
from schemas.state import MemberState, decode_state
from streams.openapi import (
    INVALID_LIMIT,
    MALFORMED_MEMBER_ID,
    OWNER_HEADER,
    OWNER_UNAVAILABLE,
    UNKNOWN_MEMBER,
)
from streams.partitioning import owner_partition
from streams.profile import (
    DEFAULT_LEDGER_LIMIT,
    MAX_LEDGER_LIMIT,
    MAX_MEMBER_ID_LENGTH,
    is_known,
    is_member_id,
    member_profile,
    recent_ledger,
)
from streams.program import Program
from streams.settings import Settings
from tables.definitions import read

RETRY_AFTER_S = 1
"""Advised wait of a 503: a rebalance of a few workers settles within seconds."""
FORWARD_TIMEOUT_S = 5.0
"""Longest wait for the owner's answer to a forwarded request."""
FORWARDED_HEADER = "Loyalty-Forwarded-By"
"""Request header of a forwarded request (the forwarding worker's URL): never forwarded
again, so two workers with different views of the assignment cannot bounce a request."""
_PASSED_HEADERS = ("Retry-After", OWNER_HEADER)
"""Headers of the owner's answer that a forwarding worker passes on."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer with a JSON body."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Answer:
    return Answer(status, {"error": code, "message": message}, headers or {})


def unavailable(message: str) -> Answer:
    """503: the member's owner cannot answer now; worth trying again shortly."""
    return _error(503, OWNER_UNAVAILABLE, message, {"Retry-After": str(RETRY_AFTER_S)})


def malformed_member_id(member_id: str) -> Answer | None:
    """The 400 answer for an id the engine could not hold (URL-decoded), else None."""
    if is_member_id(member_id):
        return None
    return _error(
        400,
        MALFORMED_MEMBER_ID,
        f"a member id is 1 to {MAX_MEMBER_ID_LENGTH} printable characters; this one has "
        f"{len(member_id)} characters"
        + ("" if member_id.isprintable() else ", not all of them printable"),
    )


def ledger_limit(raw: str | None) -> int | Answer:
    """The ``limit`` query parameter: a whole number from 1 to ``MAX_LEDGER_LIMIT``
    (default ``DEFAULT_LEDGER_LIMIT``), or the 400 answer."""
    if raw is None:
        return DEFAULT_LEDGER_LIMIT
    # isascii: str.isdigit also accepts other scripts' digits; the length bounds int().
    if raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= MAX_LEDGER_LIMIT:
        return int(raw)
    return _error(400, INVALID_LIMIT, f"limit must be a whole number from 1 to {MAX_LEDGER_LIMIT}")


def ledger_request(member_id: str, raw_limit: str | None) -> int | Answer:
    """The limit of a valid ledger request, or its 400 answer (the id is checked first)."""
    return malformed_member_id(member_id) or ledger_limit(raw_limit)


def _unknown(member_id: str) -> Answer:
    return _error(404, UNKNOWN_MEMBER, f"no member {member_id!r} on record")


def profile_answer(member_id: str, value: bytes | None, program: Program, now_ms: int) -> Answer:
    """``GET /members/{member_id}`` from the member's table value (None: absent)."""
    state = decode_state(value)
    if value is None or not is_known(state):
        return _unknown(member_id)
    return Answer(200, member_profile(member_id, state, program, now_ms))


def ledger_answer(member_id: str, value: bytes | None, limit: int) -> Answer:
    """``GET /members/{member_id}/ledger`` from the member's table value (None: absent)."""
    state = decode_state(value)
    if value is None or not is_known(state):
        return _unknown(member_id)
    return Answer(200, {"member_id": member_id, "entries": recent_ledger(member_id, state, limit)})


def _newest_first_key(item: tuple[int, tuple[str, Any]]) -> tuple[float, int]:
    index, (_, redemption) = item
    try:
        requested = datetime.fromisoformat(redemption.requested_at).timestamp()
    except (TypeError, ValueError):  # not ISO-8601 (not from the engine): listed last
        requested = float("-inf")
    return requested, index


def member_redemptions(state: MemberState) -> list[dict[str, Any]]:
    """The member's redemption requests, newest request first (by event time, then the
    order they were recorded in)."""
    ordered = sorted(enumerate(state.redemptions.items()), key=_newest_first_key, reverse=True)
    return [
        {
            "request_id": request_id,
            "reward_id": redemption.reward_id,
            "quantity": redemption.quantity,
            "points": redemption.points,
            "status": redemption.status,
            "reason": redemption.reason,
            "station_id": redemption.station_id,
            "requested_at": redemption.requested_at,
            "updated_at": redemption.updated_at,
        }
        for _, (request_id, redemption) in ordered
    ]


def redemptions_answer(member_id: str, value: bytes | None) -> Answer:
    """``GET /members/{member_id}/redemptions`` from the member's table value (None:
    absent)."""
    state = decode_state(value)
    if value is None or not (is_known(state) or state.redemptions):
        return _unknown(member_id)
    return Answer(200, {"member_id": member_id, "redemptions": member_redemptions(state)})


@dataclass(frozen=True)
class Ownership:
    """A worker's view of who holds the member table's partitions, now."""

    rebalancing: bool
    """The group is reassigning partitions, or this worker is still recovering its own."""
    active: frozenset[int]
    """Partitions this worker holds as active (not standby): its answers are current."""
    owner_urls: Mapping[int, str]
    """Partition -> URL of the worker holding it as active, as of the last assignment."""


@dataclass(frozen=True)
class Forward:
    owner_url: str


@dataclass(frozen=True)
class ReadLocally:
    pass


def route(partition: int, ownership: Ownership, forwarded: bool) -> ReadLocally | Forward | Answer:
    """Where a request for a member of ``partition`` is answered: from this worker's table,
    by the owner it is forwarded to, or a 503 while the owner is not known."""
    if ownership.rebalancing:
        return unavailable("the workers are rebalancing; the member's owner is not known yet")
    if partition in ownership.active:
        return ReadLocally()
    owner_url = ownership.owner_urls.get(partition)
    if owner_url is None:
        return unavailable(f"no worker holds partition {partition} of the member table yet")
    if forwarded:
        # The worker that forwarded this took us for the owner: the assignment is changing.
        return unavailable(f"partition {partition} is moving between workers")
    return Forward(owner_url)


def current_ownership(app: faust.App, table: TableT) -> Ownership:
    """What the assignor of this worker knows of ``table``'s partitions."""
    topic = table.changelog_topic.get_topic_name()
    assignor = app.assignor
    return Ownership(
        rebalancing=app.rebalancing,
        active=frozenset(tp.partition for tp in assignor.assigned_actives() if tp.topic == topic),
        owner_urls={
            partition: url
            for url, topics in assignor.table_metadata(topic).items()
            for partition in topics.get(topic, ())
        },
    )


def register(
    app: faust.App, settings: Settings, program: Program, table: TableT, clock: Clock
) -> None:
    """The member pages; ``table`` is ``member_to_state``, ``clock`` gives the time the
    profile's day-dependent figures are computed for."""

    def respond(view: Any, answer: Answer) -> Any:
        return view.bytes(
            orjson.dumps(answer.body),
            content_type="application/json",
            status=answer.status,
            headers=dict(answer.headers),
        )

    async def forward(view: Any, request: Any, owner_url: str) -> Any:
        # raw_path keeps the path's percent-encoding (a "/" in an id) and the query.
        target = URL(owner_url.rstrip("/") + request.raw_path, encoded=True)
        try:
            async with app.http_client.get(
                target,
                headers={FORWARDED_HEADER: settings.advertised_url},
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as response:
                body = await response.read()
                headers = {
                    name: response.headers[name]
                    for name in _PASSED_HEADERS
                    if name in response.headers
                }
                return view.bytes(
                    body,
                    content_type=response.content_type,
                    status=response.status,
                    headers=headers,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
            return respond(
                view, unavailable(f"the owner at {owner_url} did not answer ({failure})")
            )

    async def serve(
        view: Any, request: Any, member_id: str, answer_for: Callable[[bytes | None], Answer]
    ) -> Any:
        """Answer from this worker's table, or by forwarding to the member's owner."""
        key = member_id.encode()
        partition = owner_partition(key, settings.partitions)
        where = route(partition, current_ownership(app, table), FORWARDED_HEADER in request.headers)
        if isinstance(where, Answer):
            return respond(view, where)
        if isinstance(where, Forward):
            return await forward(view, request, where.owner_url)
        answer = answer_for(read(table, partition, key))
        owner = {**answer.headers, OWNER_HEADER: settings.advertised_url}
        return respond(view, Answer(answer.status, answer.body, owner))

    @app.page("/members/{member_id}")
    async def get_member_profile(view: Any, request: Any, member_id: str) -> Any:
        malformed = malformed_member_id(member_id)
        if malformed is not None:
            return respond(view, malformed)
        return await serve(
            view,
            request,
            member_id,
            lambda value: profile_answer(member_id, value, program, clock()),
        )

    @app.page("/members/{member_id}/ledger")
    async def get_member_ledger(view: Any, request: Any, member_id: str) -> Any:
        limit = ledger_request(member_id, request.query.get("limit"))
        if isinstance(limit, Answer):
            return respond(view, limit)
        return await serve(
            view, request, member_id, lambda value: ledger_answer(member_id, value, limit)
        )

    @app.page("/members/{member_id}/redemptions")
    async def get_member_redemptions(view: Any, request: Any, member_id: str) -> Any:
        malformed = malformed_member_id(member_id)
        if malformed is not None:
            return respond(view, malformed)
        return await serve(
            view, request, member_id, lambda value: redemptions_answer(member_id, value)
        )
