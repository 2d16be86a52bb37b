"""The redemption saga, as pure transitions: a member spends points on a catalog reward.

A redemption touches three partitions: its coordinator's (the partition of its
``request_id``, table ``redemption_requests``), the member's (balance, table
``member_to_state``) and the reward's (stock, table ``reward_stock``). They talk through
Kafka topics, each step a message keyed for the partition that takes it:

1. request -> coordinator: checks the reward in the catalog, asks the member's partition to
   **hold** the points (``loyalty.member-commands``, key member_id);
2. member: sets the points aside if the available balance (balance less held points)
   covers them and the per-member limit allows, replies ``held`` or ``refused``
   (``loyalty.redemption-steps``, key request_id);
3. coordinator: asks the reward's partition to **reserve** the stock
   (``loyalty.stock-commands``, key reward_id);
4. stock: reserves if the live stock covers the quantity, replies ``reserved`` or
   ``unavailable``;
5. coordinator: tells the member's partition to **confirm** (the points are debited:
   ledger ``redemption``) or **reject** (the hold is released).

A station then reports the redemption ``fulfilled`` or ``cancelled``; a cancellation
returns the stock (**return**) and the points (**cancel**: ledger ``redemption_refund``).

Every step is idempotent by request_id where it is applied (the coordinator's and the
stock's tables, the member's redemption records), and a step's state change is durable in
its table's changelog before its messages are produced; a redelivered message re-sends the
same messages. So a worker dying at any step loses and duplicates nothing: the step is
redone, and the next one ignores what it has already applied.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from loyalty.schemas.events import CANCELLED, FULFILLED, REDEMPTION_REQUEST, RedemptionMessage
from loyalty.schemas.state import RedemptionRequest, RewardStock

# Coordinator statuses.
HOLDING = "holding"
RESERVING = "reserving"
CONFIRMED = "confirmed"
REJECTED = "rejected"

GRANTED = (CONFIRMED, FULFILLED)
"""Statuses of a redemption whose points were spent (a cancellation gives them back)."""

# Member-side steps (loyalty.member-commands) and statuses.
HOLD = "hold"
CONFIRM = "confirm"
REJECT = "reject"
CANCEL = "cancel"
HELD = "held"

# Replies to the coordinator (loyalty.redemption-steps).
REFUSED = "refused"
RESERVED = "reserved"
UNAVAILABLE = "unavailable"

# Stock steps (loyalty.stock-commands).
RESERVE = "reserve"
RETURN = "return"
RETURNED = "returned"

# Rejection reasons (public: reward events, notifications and the member's redemptions).
INSUFFICIENT_POINTS = "insufficient_points"
OUT_OF_STOCK = "out_of_stock"
UNKNOWN_REWARD = "unknown_reward"
INACTIVE_REWARD = "inactive_reward"
LIMIT_REACHED = "limit_reached"

# Dead-letter reasons of station messages that cannot apply.
UNKNOWN_REQUEST = "unknown_request"
NOT_CONFIRMED = "redemption_not_confirmed"
REQUEST_ID_CONFLICT = "request_id_conflict"

MAX_REMEMBERED = 1000
"""Requests a reward's partition remembers: every reservation of a limited reward (its
stock bounds them), and the latest rejections and returns up to this many in all."""

MEMBER, COORDINATOR, STOCK = "member", "coordinator", "stock"
"""Where a step message goes: the member's, the request's or the reward's partition."""

Step = tuple[str, str, dict[str, Any]]
"""A message to send: (destination, key, value)."""


class Reward(Protocol):
    """What the saga reads of a catalog entry (``schemas.catalog.Reward``)."""

    @property
    def cost_points(self) -> int: ...
    @property
    def stock(self) -> int | None: ...
    @property
    def active(self) -> bool: ...
    @property
    def per_member_limit(self) -> int | None: ...
    @property
    def name(self) -> dict[str, str]: ...


class Catalog(Protocol):
    def get(self, reward_id: str) -> Reward | None: ...


class RejectedStationMessage(ValueError):
    """A fulfilment or cancellation that cannot apply (dead-lettered with ``reason``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _member_step(
    step: str, request_id: str, request: RedemptionRequest, occurred_at: str, **extra: Any
) -> Step:
    return (
        MEMBER,
        request.member_id,
        {
            "redemption": step,
            "request_id": request_id,
            "member_id": request.member_id,
            "reward_id": request.reward_id,
            "quantity": request.quantity,
            "points": request.points,
            "station_id": request.station_id,
            "requested_at": request.requested_at,
            "occurred_at": occurred_at,
            **extra,
        },
    )


def _stock_step(step: str, request_id: str, request: RedemptionRequest, occurred_at: str) -> Step:
    return (
        STOCK,
        request.reward_id,
        {
            "stock": step,
            "request_id": request_id,
            "reward_id": request.reward_id,
            "quantity": request.quantity,
            "occurred_at": occurred_at,
        },
    )


def reply(request_id: str, outcome: str, occurred_at: str, reason: str | None = None) -> Step:
    """A step's answer to the redemption's coordinator."""
    value = {"step": outcome, "request_id": request_id, "occurred_at": occurred_at}
    if reason is not None:
        value["reason"] = reason
    return COORDINATOR, request_id, value


def coordinate_request(
    request: RedemptionRequest | None, message: RedemptionMessage, catalog: Catalog
) -> tuple[RedemptionRequest, list[Step]]:
    """A request at its coordinator: hold the points, or reject an unknown or inactive
    reward at once. A redelivered request re-sends its first step."""
    assert message.type == REDEMPTION_REQUEST
    member_id, reward_id, quantity = message.member_id, message.reward_id, message.quantity
    assert member_id is not None and reward_id is not None and quantity is not None
    occurred_at = message.occurred_at.isoformat()
    if request is not None:
        if (request.member_id, request.reward_id, request.quantity) != (
            member_id,
            reward_id,
            quantity,
        ):
            raise RejectedStationMessage(
                REQUEST_ID_CONFLICT,
                f"request_id {message.request_id!r} was already used for another request",
            )
        return request, _first_step(message.request_id, request, catalog)
    reward = catalog.get(reward_id)
    reason = UNKNOWN_REWARD if reward is None else None if reward.active else INACTIVE_REWARD
    new = RedemptionRequest(
        member_id=member_id,
        reward_id=reward_id,
        quantity=quantity,
        points=0 if reward is None else reward.cost_points * quantity,
        station_id=message.station_id,
        requested_at=occurred_at,
        status=REJECTED if reason else HOLDING,
        reason=reason,
    )
    return new, _first_step(message.request_id, new, catalog)


def _first_step(request_id: str, request: RedemptionRequest, catalog: Catalog) -> list[Step]:
    if request.status == REJECTED and request.reason in (UNKNOWN_REWARD, INACTIVE_REWARD):
        return [
            _member_step(
                REJECT,
                request_id,
                request,
                request.requested_at,
                reason=request.reason,
                **_names(catalog, request),
            )
        ]
    if request.status == HOLDING:
        reward = catalog.get(request.reward_id)
        limit = reward.per_member_limit if reward is not None else None
        return [
            _member_step(
                HOLD,
                request_id,
                request,
                request.requested_at,
                per_member_limit=limit,
                **_names(catalog, request),
            )
        ]
    return []  # later steps were sent by the replies that advanced it


def _names(catalog: Catalog, request: RedemptionRequest) -> dict[str, Any]:
    reward = catalog.get(request.reward_id)
    return {"reward_name": dict(reward.name) if reward is not None else {}}


def coordinate_reply(
    request: RedemptionRequest, request_id: str, step: dict[str, Any], catalog: Catalog
) -> tuple[RedemptionRequest, list[Step]]:
    """A reply of the member's or the reward's partition at the coordinator. A reply that
    was applied already re-sends the step it led to (the next partition ignores repeats)."""
    outcome, occurred_at = step["step"], step["occurred_at"]
    names = _names(catalog, request)
    if outcome == HELD:
        if request.status == HOLDING:
            request = replace(request, status=RESERVING)
        if request.status == RESERVING:
            return request, [_stock_step(RESERVE, request_id, request, occurred_at)]
        return request, []
    if outcome == REFUSED:
        # The member's partition rejected it and told the member already.
        if request.status == HOLDING:
            request = replace(request, status=REJECTED, reason=step["reason"])
        return request, []
    if outcome == RESERVED:
        if request.status == RESERVING:
            request = replace(request, status=CONFIRMED)
        if request.status == CONFIRMED:
            return request, [_member_step(CONFIRM, request_id, request, occurred_at, **names)]
        return request, []
    if outcome == UNAVAILABLE:
        if request.status == RESERVING:
            request = replace(request, status=REJECTED, reason=step["reason"])
        if request.status == REJECTED and request.reason == step["reason"]:
            reject = _member_step(
                REJECT, request_id, request, occurred_at, reason=step["reason"], **names
            )
            return request, [reject]
        return request, []
    raise ValueError(f"unknown redemption step {outcome!r}")


def coordinate_station(
    request: RedemptionRequest | None, message: RedemptionMessage, catalog: Catalog
) -> tuple[RedemptionRequest, list[Step]]:
    """A station's ``fulfilled`` or ``cancelled`` at the coordinator. A cancellation returns
    the stock and the points; delivered twice, it re-sends the same steps, which apply once."""
    if request is None:
        raise RejectedStationMessage(
            UNKNOWN_REQUEST, f"no redemption request {message.request_id!r}"
        )
    occurred_at = message.occurred_at.isoformat()
    request_id = message.request_id
    names = _names(catalog, request)
    if message.type == FULFILLED and request.status in GRANTED:
        request = replace(request, status=FULFILLED)
        return request, [_member_step(FULFILLED, request_id, request, occurred_at, **names)]
    if message.type == CANCELLED and request.status in (*GRANTED, CANCELLED):
        request = replace(request, status=CANCELLED)
        return request, [
            _stock_step(RETURN, request_id, request, occurred_at),
            _member_step(CANCEL, request_id, request, occurred_at, **names),
        ]
    raise RejectedStationMessage(
        NOT_CONFIRMED,
        f"redemption {request_id!r} is {request.status}; only a confirmed one can be "
        f"{message.type}",
    )


def apply_stock_step(
    stock: RewardStock, step: dict[str, Any], reward: Reward | None
) -> tuple[RewardStock, list[Step]]:
    """A reservation or a return at the reward's partition, the only one that decides its
    stock: never more reserved than the catalog's stock."""
    request_id, quantity = step["request_id"], step["quantity"]
    occurred_at = step["occurred_at"]
    known = stock.requests.get(request_id)
    if step["stock"] == RETURN:
        if known is None or known[1] != RESERVED:
            return stock, []  # never reserved, or returned already
        requests = {**stock.requests, request_id: [known[0], RETURNED]}
        return RewardStock(stock.reserved - known[0], requests), []
    if known is not None:  # a redelivered reservation gets the same answer
        outcome = known[1]
        if outcome in (RESERVED, RETURNED):
            return stock, [reply(request_id, RESERVED, occurred_at)]
        return stock, [reply(request_id, UNAVAILABLE, occurred_at, outcome)]
    if reward is None:
        reason: str | None = UNKNOWN_REWARD
    elif not reward.active:
        reason = INACTIVE_REWARD
    elif reward.stock is not None and stock.reserved + quantity > reward.stock:
        reason = OUT_OF_STOCK
    else:
        reason = None
    if reason is not None:
        requests = {**_bounded(stock.requests), request_id: [quantity, reason]}
        return RewardStock(stock.reserved, requests), [
            reply(request_id, UNAVAILABLE, occurred_at, reason)
        ]
    if reward is not None and reward.stock is None:
        return stock, [reply(request_id, RESERVED, occurred_at)]  # unlimited: nothing to count
    requests = {**stock.requests, request_id: [quantity, RESERVED]}
    return RewardStock(stock.reserved + quantity, requests), [
        reply(request_id, RESERVED, occurred_at)
    ]


def _bounded(requests: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The requests less the oldest answered ones (rejections, returns) beyond
    ``MAX_REMEMBERED``; reservations are kept, for their return."""
    excess = len(requests) - MAX_REMEMBERED + 1
    if excess <= 0:
        return requests
    kept = {}
    for request_id, (quantity, outcome) in requests.items():
        if excess > 0 and outcome != RESERVED:
            excess -= 1
            continue
        kept[request_id] = [quantity, outcome]
    return kept
