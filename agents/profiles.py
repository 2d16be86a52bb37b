"""The member profile API, served by every worker: ``GET /members/{member_id}``,
``GET /members/{member_id}/ledger`` and ``GET /members/{member_id}/redemptions`` (described
in ``agents.openapi``).

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

The URLs come from the group's metadata, which any client allowed to join the group can
write, so forwarding trusts none of it (``streams.peers``): the request goes only to
``scheme://host:port`` of an allowed host (``LOYALTY_PEER_HOSTS``), with a path and query
rebuilt from the validated request, without following redirects; and the owner's answer is
relayed only with a valid proof of the workers' shared ``LOYALTY_PEER_TOKEN``, else the
answer is a 503. Without a token, forwarding is off.

What to answer is decided by pure functions of the request, the member's stored value, the
time and the worker's view of the assignment; the pages below only do the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from time import monotonic
from typing import Any
from urllib.parse import quote

import aiohttp
import faust
import orjson
from faust.types import TableT
from yarl import URL

from loyalty.agents.accounts import Clock
from loyalty.agents.openapi import (
    INVALID_LIMIT,
    MALFORMED_MEMBER_ID,
    OWNER_HEADER,
    OWNER_UNAVAILABLE,
    UNKNOWN_MEMBER,
)
from loyalty.core.profile import (
    DEFAULT_LEDGER_LIMIT,
    MAX_LEDGER_LIMIT,
    is_known,
    member_profile,
    recent_ledger,
)
from loyalty.core.program import Program
from loyalty.schemas.ids import MAX_ID_LENGTH, is_identifier
from loyalty.schemas.state import MemberState, decode_state
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.peers import (
    NONCE_HEADER,
    PROOF_HEADER,
    SIGNATURE_HEADER,
    PeerHosts,
    answer_is_proven,
    answer_proof,
    new_nonce,
    peer_base_url,
    request_is_signed,
    request_signature,
)
from loyalty.streams.settings import Settings
from loyalty.tables.definitions import read

RETRY_AFTER_S = 1
"""Advised wait of a 503: a rebalance of a few workers settles within seconds."""
FORWARD_TIMEOUT_S = 5.0
"""Longest wait for the owner's answer to a forwarded request."""
MAX_FORWARDED_BYTES = 4 * 1024 * 1024
"""Largest owner's answer a forwarding worker reads (a member's state is far smaller)."""
PASSED_HEADERS = ("Retry-After", OWNER_HEADER)
"""Headers of the owner's answer that a forwarding worker passes on (and the proof
covers)."""
# A forwarded request carries ``streams.peers.NONCE_HEADER``: it is never forwarded again,
# so two workers with different views of the assignment cannot bounce a request.

log = logging.getLogger(__name__)


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
    if is_identifier(member_id):
        return None
    return _error(
        400,
        MALFORMED_MEMBER_ID,
        f"a member id is 1 to {MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ : @ + -, "
        f"starting with a letter or digit (the ids ingest accepts); this one has "
        f"{len(member_id)} characters",
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


def member_target(member_id: str, suffix: str = "", limit: int | None = None) -> str:
    """The request target (path and query, percent-encoded) of a member page, rebuilt from
    the validated request: what a forwarding worker asks the owner for."""
    query = "" if limit is None else f"?limit={limit}"
    return f"/members/{quote(member_id, safe='')}{suffix}{query}"


def forward_base(owner_url: str, peer_hosts: PeerHosts, peer_token: str) -> str | Answer:
    """``scheme://host:port`` to forward a request to, or the 503 answer when forwarding is
    off (no ``LOYALTY_PEER_TOKEN``) or the owner's advertised URL is not an allowed peer."""
    if not peer_token:
        return unavailable(
            "another worker holds this member and forwarding between workers is off "
            "(LOYALTY_PEER_TOKEN is not set)"
        )
    base = peer_base_url(owner_url, peer_hosts)
    if base is None:
        return unavailable(
            "the owner of this member advertises a URL this worker does not forward to "
            "(not http or https, or a host not in LOYALTY_PEER_HOSTS)"
        )
    return base


def relayed_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers a forwarding worker passes on, in ``PASSED_HEADERS`` order (``""``
    for an absent one): what the owner's proof covers."""
    return [(name, headers.get(name, "")) for name in PASSED_HEADERS]


def unproven_answer(
    peer_token: str,
    nonce: str,
    base: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> Answer | None:
    """None when the answer of the owner at ``base`` to the request of ``nonce`` carries a
    valid proof; otherwise the 503 to answer instead of it."""
    relayed = relayed_headers(headers)
    if answer_is_proven(peer_token, nonce, status, relayed, body, headers.get(PROOF_HEADER)):
        return None
    return unavailable(
        f"the owner at {base} did not prove the workers' shared token (LOYALTY_PEER_TOKEN)"
    )


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


class _ThrottledWarnings:
    """Logs each warning at most once per ``interval`` seconds, with the count it held
    back: a rogue group member must not flood the log."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.next_at: dict[str, float] = {}
        self.held_back: dict[str, int] = {}

    def __call__(self, message: str, *args: Any) -> None:
        now = monotonic()
        if now < self.next_at.get(message, 0.0):
            self.held_back[message] = self.held_back.get(message, 0) + 1
            return
        self.next_at[message] = now + self.interval
        held_back = self.held_back.pop(message, 0)
        log.warning(message + " (%d more held back)", *args, held_back)


def register(
    app: faust.App, settings: Settings, program: Program, table: TableT, clock: Clock
) -> None:
    """The member pages; ``table`` is ``member_to_state``, ``clock`` gives the time the
    profile's day-dependent figures are computed for."""
    peer_hosts = PeerHosts.parse(settings.peer_hosts)
    peer_token = settings.peer_token
    warn = _ThrottledWarnings()

    def respond(view: Any, answer: Answer, proof_nonce: str | None = None) -> Any:
        """The answer; with its proof when it answers a signed forwarded request."""
        body = orjson.dumps(answer.body)
        headers = dict(answer.headers)
        if proof_nonce is not None:
            relayed = relayed_headers(headers)
            headers[PROOF_HEADER] = answer_proof(
                peer_token, proof_nonce, answer.status, relayed, body
            )
        return view.bytes(
            body, content_type="application/json", status=answer.status, headers=headers
        )

    async def read_limited(response: aiohttp.ClientResponse) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > MAX_FORWARDED_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def forward(view: Any, owner_url: str, target: str) -> Any:
        base = forward_base(owner_url, peer_hosts, peer_token)
        if isinstance(base, Answer):
            if peer_token:
                warn("not forwarding to %r: not an allowed peer", owner_url[:200])
            return respond(view, base)
        nonce = new_nonce()
        headers = {
            NONCE_HEADER: nonce,
            SIGNATURE_HEADER: request_signature(peer_token, nonce, "GET", target),
        }
        try:
            async with app.http_client.get(
                # encoded: the target is sent exactly as signed.
                URL(base + target, encoded=True),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as response:
                body = await read_limited(response)
                status, owner_headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
            return respond(view, unavailable(f"the owner at {base} did not answer ({failure})"))
        if body is None:
            refused = unavailable(f"the owner at {base} answered more than {MAX_FORWARDED_BYTES} B")
        else:
            unproven = unproven_answer(peer_token, nonce, base, status, owner_headers, body)
            if unproven is None:
                passed = {name: value for name, value in relayed_headers(owner_headers) if value}
                return view.bytes(
                    body, content_type="application/json", status=status, headers=passed
                )
            refused = unproven
        warn("not relaying the answer of %s: %s", base, refused.body["message"])
        return respond(view, refused)

    async def serve(
        view: Any,
        request: Any,
        member_id: str,
        target: str,
        answer_for: Callable[[bytes | None], Answer],
    ) -> Any:
        """Answer from this worker's table, or by forwarding to the member's owner."""
        nonce = request.headers.get(NONCE_HEADER)
        if nonce is not None and not request_is_signed(
            peer_token,
            nonce,
            request.method,
            request.raw_path,
            request.headers.get(SIGNATURE_HEADER),
        ):
            warn("refused a forwarded request with an invalid signature from %s", request.remote)
            return respond(
                view,
                unavailable(
                    "this worker could not verify the forwarded request's signature "
                    "(the workers' LOYALTY_PEER_TOKEN differ)"
                ),
            )
        key = member_id.encode()
        partition = owner_partition(key, settings.partitions)
        where = route(partition, current_ownership(app, table), forwarded=nonce is not None)
        if isinstance(where, Answer):
            return respond(view, where, nonce)
        if isinstance(where, Forward):
            return await forward(view, where.owner_url, target)
        answer = answer_for(read(table, partition, key))
        owner = {**answer.headers, OWNER_HEADER: settings.advertised_url}
        return respond(view, Answer(answer.status, answer.body, owner), nonce)

    @app.page("/members/{member_id}")
    async def get_member_profile(view: Any, request: Any, member_id: str) -> Any:
        malformed = malformed_member_id(member_id)
        if malformed is not None:
            return respond(view, malformed)
        return await serve(
            view,
            request,
            member_id,
            member_target(member_id),
            lambda value: profile_answer(member_id, value, program, clock()),
        )

    @app.page("/members/{member_id}/ledger")
    async def get_member_ledger(view: Any, request: Any, member_id: str) -> Any:
        limit = ledger_request(member_id, request.query.get("limit"))
        if isinstance(limit, Answer):
            return respond(view, limit)
        return await serve(
            view,
            request,
            member_id,
            member_target(member_id, "/ledger", limit),
            lambda value: ledger_answer(member_id, value, limit),
        )

    @app.page("/members/{member_id}/redemptions")
    async def get_member_redemptions(view: Any, request: Any, member_id: str) -> Any:
        malformed = malformed_member_id(member_id)
        if malformed is not None:
            return respond(view, malformed)
        return await serve(
            view,
            request,
            member_id,
            member_target(member_id, "/redemptions"),
            lambda value: redemptions_answer(member_id, value),
        )
