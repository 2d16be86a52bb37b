"""The redemption saga as pure transitions, driven through an in-memory message bus.

The bus keeps each key's messages in order (a Kafka partition) and interleaves keys at
random, delivering some messages twice (at-least-once); the invariants of issue 6 must
hold for every seed: never oversold, never a negative balance, points and stock exact,
every request ends confirmed or rejected.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loyalty.core import saga
from loyalty.core.accounts import apply_redemption_step, held_points
from loyalty.core.render import render_redemption
from loyalty.schemas.decode import decode_member_command
from loyalty.schemas.events import CANCELLED, FULFILLED, REDEMPTION_REQUEST, RedemptionMessage
from loyalty.schemas.outputs import REDEMPTION, REDEMPTION_REFUND
from loyalty.schemas.state import MemberState, RedemptionRequest, RewardStock
from tests.unit.builders import NOW_MS, PROGRAM

T0 = datetime(2026, 5, 1, 10, tzinfo=UTC)


@dataclass(frozen=True)
class Reward:
    cost_points: int
    stock: int | None
    active: bool = True
    per_member_limit: int | None = None
    name: dict[str, str] = field(default_factory=lambda: {"en": "Car wash"})


class Catalog(dict[str, Reward]):
    pass


@dataclass
class Bus:
    """Coordinator, member and stock partitions with their tables, and the messages in
    flight between them, in order per key."""

    catalog: Catalog
    rng: random.Random
    duplicate_share: float = 0.0
    requests: dict[str, RedemptionRequest] = field(default_factory=dict)
    members: dict[str, MemberState] = field(default_factory=dict)
    stock: dict[str, RewardStock] = field(default_factory=dict)
    queues: dict[tuple[str, str], deque[Any]] = field(default_factory=dict)
    ledger: list[tuple[str, str, int]] = field(default_factory=list)
    notices: list[tuple[str, str]] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)

    def send(self, destination: str, key: str, value: Any) -> None:
        self.queues.setdefault((destination, key), deque()).append(value)

    def station(self, message: RedemptionMessage) -> None:
        self.send(saga.COORDINATOR, message.request_id, message)

    def run(self) -> None:
        while any(self.queues.values()):
            ready = [queue for queue in self.queues.values() if queue]
            queue = self.rng.choice(ready)
            value = queue[0]
            self.deliver(queue, value)
            if self.rng.random() < self.duplicate_share:
                self.deliver(queue, value)  # redelivered: the state already holds it
            queue.popleft()

    def deliver(self, queue: deque[Any], value: Any) -> None:
        destination, key = next(k for k, q in self.queues.items() if q is queue)
        if destination == saga.COORDINATOR:
            self.coordinate(key, value)
        elif destination == saga.STOCK:
            stock = self.stock.get(key, RewardStock())
            self.stock[key], steps = saga.apply_stock_step(stock, value, self.catalog.get(key))
            self.forward(steps)
        else:
            self.member(key, value)

    def coordinate(self, request_id: str, value: Any) -> None:
        request = self.requests.get(request_id)
        try:
            if isinstance(value, RedemptionMessage) and value.type == REDEMPTION_REQUEST:
                new, steps = saga.coordinate_request(request, value, self.catalog)
            elif isinstance(value, RedemptionMessage):
                new, steps = saga.coordinate_station(request, value, self.catalog)
            else:
                assert request is not None
                new, steps = saga.coordinate_reply(request, request_id, value, self.catalog)
        except saga.RejectedStationMessage as error:
            self.dead_letters.append(error.reason)
            return
        self.requests[request_id] = new
        self.forward(steps)

    def member(self, member_id: str, value: dict[str, Any]) -> None:
        import orjson

        step = decode_member_command(orjson.dumps(value))
        state = self.members[member_id]
        new, outcome = apply_redemption_step(state, step, PROGRAM, NOW_MS)  # type: ignore[arg-type]
        outputs = render_redemption(step, outcome.applied, new, PROGRAM)  # type: ignore[arg-type]
        if not outcome.duplicate:
            self.ledger += [(member_id, e.reason, e.delta) for e in outputs.ledger]
            self.notices += [(member_id, n.kind) for n in outputs.notifications]
        self.members[member_id] = new
        self.forward(outputs.saga)

    def forward(self, steps: list[saga.Step]) -> None:
        for destination, key, value in steps:
            self.send(destination, key, value)


def request(
    request_id: str, member_id: str, reward_id: str, quantity: int = 1
) -> RedemptionMessage:
    return RedemptionMessage(
        REDEMPTION_REQUEST, request_id, "st-1", T0, member_id, reward_id, quantity
    )


def station(kind: str, request_id: str, minutes: int = 5) -> RedemptionMessage:
    return RedemptionMessage(kind, request_id, "st-1", T0 + timedelta(minutes=minutes))


def member_with(points: int) -> MemberState:
    return MemberState(balance=points, enrolled_at=T0.isoformat(), lots={739000: points})


def statuses(bus: Bus) -> dict[str, str]:
    return {request_id: r.status for request_id, r in bus.requests.items()}


@pytest.mark.parametrize("seed", range(20))
def test_a_race_for_ten_units_confirms_exactly_ten(seed):
    catalog = Catalog(wash=Reward(cost_points=50, stock=10))
    bus = Bus(catalog, random.Random(seed), duplicate_share=0.2)
    members = [f"m{i:03d}" for i in range(100)]
    for index, member_id in enumerate(members):
        bus.members[member_id] = member_with(75 if index % 10 else 20)  # some cannot pay
    for number in range(200):
        member_id = members[number % 100]
        bus.station(request(f"r{number:03d}", member_id, "wash"))
    bus.run()

    final = statuses(bus)
    assert list(final.values()).count(saga.CONFIRMED) == 10
    assert set(final.values()) == {saga.CONFIRMED, saga.REJECTED}
    reasons = {r.reason for r in bus.requests.values() if r.status == saga.REJECTED}
    assert reasons <= {saga.OUT_OF_STOCK, saga.INSUFFICIENT_POINTS}
    assert bus.stock["wash"].reserved == 10
    for member_id, state in bus.members.items():
        confirmed = [r for r in state.redemptions.values() if r.status == saga.CONFIRMED]
        start = 75 if int(member_id[1:]) % 10 else 20
        assert state.balance == start - 50 * len(confirmed) >= 0
        assert held_points(state) == 0
    # one ledger entry per confirmed redemption, one notification per outcome
    assert sorted(delta for _, reason, delta in bus.ledger) == [-50] * 10
    assert len(bus.notices) == 200


def test_cancel_after_confirm_returns_points_and_stock_once_even_delivered_twice():
    catalog = Catalog(wash=Reward(cost_points=50, stock=1))
    bus = Bus(catalog, random.Random(1))
    bus.members["m1"] = member_with(120)
    bus.station(request("r1", "m1", "wash"))
    bus.run()
    assert statuses(bus) == {"r1": saga.CONFIRMED}
    assert bus.members["m1"].balance == 70 and bus.stock["wash"].reserved == 1

    bus.station(station(CANCELLED, "r1"))
    bus.station(station(CANCELLED, "r1", minutes=6))  # the station sends it again
    bus.run()
    assert statuses(bus) == {"r1": CANCELLED}
    assert bus.members["m1"].balance == 120
    assert bus.stock["wash"].reserved == 0
    assert [(reason, delta) for _, reason, delta in bus.ledger] == [
        (REDEMPTION, -50),
        (REDEMPTION_REFUND, 50),
    ]
    assert bus.members["m1"].redemptions["r1"].status == CANCELLED
    # the unit is back: another member can have it
    bus.members["m2"] = member_with(60)
    bus.station(request("r2", "m2", "wash"))
    bus.run()
    assert statuses(bus)["r2"] == saga.CONFIRMED


def test_fulfilment_and_the_station_messages_that_cannot_apply():
    catalog = Catalog(wash=Reward(cost_points=50, stock=5))
    bus = Bus(catalog, random.Random(2))
    bus.members["m1"] = member_with(60)
    bus.station(request("r1", "m1", "wash"))
    bus.station(request("r2", "m1", "wash"))  # only 10 points left after the first
    bus.run()
    assert statuses(bus) == {"r1": saga.CONFIRMED, "r2": saga.REJECTED}
    assert bus.requests["r2"].reason == saga.INSUFFICIENT_POINTS
    bus.station(station(FULFILLED, "r1"))
    bus.station(station(FULFILLED, "r2"))  # rejected: nothing to fulfil
    bus.station(station(CANCELLED, "r9"))  # never requested
    bus.run()
    assert bus.requests["r1"].status == FULFILLED
    assert bus.members["m1"].redemptions["r1"].status == FULFILLED
    assert bus.dead_letters == [saga.NOT_CONFIRMED, saga.UNKNOWN_REQUEST]


@pytest.mark.parametrize(
    ("reward", "reason"),
    [
        (None, saga.UNKNOWN_REWARD),
        (Reward(cost_points=10, stock=5, active=False), saga.INACTIVE_REWARD),
        (Reward(cost_points=10, stock=0), saga.OUT_OF_STOCK),
    ],
)
def test_rejections_reach_the_member_with_their_reason(reward, reason):
    catalog = Catalog() if reward is None else Catalog(gift=reward)
    bus = Bus(catalog, random.Random(3))
    bus.members["m1"] = member_with(100)
    bus.station(request("r1", "m1", "gift"))
    bus.run()
    record = bus.members["m1"].redemptions["r1"]
    assert (record.status, record.reason) == (saga.REJECTED, reason)
    assert bus.members["m1"].balance == 100 and held_points(bus.members["m1"]) == 0
    assert bus.notices == [("m1", "redemption_rejected")]


def test_per_member_limit_counts_granted_units():
    catalog = Catalog(coffee=Reward(cost_points=10, stock=None, per_member_limit=2))
    bus = Bus(catalog, random.Random(4))
    bus.members["m1"] = member_with(100)
    for number in range(3):
        bus.station(request(f"r{number}", "m1", "coffee"))
        bus.run()  # one after the other
    assert statuses(bus) == {"r0": saga.CONFIRMED, "r1": saga.CONFIRMED, "r2": saga.REJECTED}
    assert bus.requests["r2"].reason == saga.LIMIT_REACHED
    assert bus.members["m1"].balance == 80


def test_a_request_id_reused_for_another_request_is_refused():
    catalog = Catalog(wash=Reward(cost_points=10, stock=5))
    bus = Bus(catalog, random.Random(5))
    bus.members["m1"] = member_with(100)
    bus.station(request("r1", "m1", "wash"))
    bus.run()
    bus.station(request("r1", "m1", "wash", quantity=2))
    bus.station(request("r1", "m1", "wash"))  # the same request again: harmless
    bus.run()
    assert bus.dead_letters == [saga.REQUEST_ID_CONFLICT]
    assert bus.members["m1"].balance == 90 and bus.stock["wash"].reserved == 1


def test_reason_texts_need_the_english_fallback():
    import tomllib
    from pathlib import Path

    from loyalty.core.program import ProgramError, parse_program

    data = tomllib.loads(Path("program/default.toml").read_text(encoding="utf-8"))
    del data["notifications"]["reason_texts"]["en"]
    with pytest.raises(ProgramError, match="reason_texts.*'en'"):
        parse_program(data)
