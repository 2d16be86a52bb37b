import asyncio
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from loyalty.agents.topology import create_app
from loyalty.localkafka.broker import free_port
from loyalty.streams import faust_patches
from loyalty.streams.settings import Settings


def test_worker_consumer_fetch_wait_comes_from_settings(tmp_path):
    # Faust fixes it at 1500 ms, which stalled deliveries for a second (patch 5).
    settings = replace(Settings(), data_dir=tmp_path, fetch_max_wait_ms=7)
    app = create_app(settings)

    async def create_consumer():  # aiokafka wants a running loop
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        await consumer.stop()
        return consumer

    assert asyncio.run(create_consumer())._fetch_max_wait_ms == 7


def test_http_connections_that_take_too_long_to_send_a_request_are_closed(tmp_path):
    # Faust keeps aiohttp's default: 3,630 s for a half-sent request (patch 6).
    timeout = 1.0
    settings = replace(Settings(), data_dir=tmp_path, web_port=free_port(), http_timeout_s=timeout)
    app = create_app(settings)

    async def seconds_until_closed(trickle: bool) -> float:
        reader, writer = await asyncio.open_connection(settings.web_host, settings.web_port)
        started = time.monotonic()
        writer.write(b"GET /metr")

        async def send_slowly() -> None:  # the rest, one byte per 0.2 s: pacing, not waiting
            for byte in b"ics HTTP/1.1\r\nHost: x\r\n\r\n":
                await asyncio.sleep(0.2)
                writer.write(bytes([byte]))

        sender = asyncio.create_task(send_slowly()) if trickle else None
        # The server closes the connection: the read ends without an answer.
        assert await asyncio.wait_for(reader.read(), timeout=timeout + 5) == b""
        elapsed = time.monotonic() - started
        if sender is not None:
            sender.cancel()
        writer.close()
        return elapsed

    async def run() -> list[float]:
        app.web.init_server()
        await app.web.start_server()
        try:
            return [await seconds_until_closed(trickle) for trickle in (False, True)]
        finally:
            await app.web.stop_server()

    for elapsed in asyncio.run(run()):
        assert timeout * 0.9 <= elapsed < timeout + 1


def test_faust_hands_records_of_different_topics_over_by_round_robin_not_by_time():
    # Why the account agent orders a member partition's records itself (patch 7): Faust
    # delivers a later sale before an earlier signup when their topics come in that order.
    sale = SimpleNamespace(timestamp=2_000)
    signup = SimpleNamespace(timestamp=1_000)
    records = {TP("transactions", 0): [sale], TP("members", 0): [signup]}
    delivered = [record for _, record in DefaultSchedulingStrategy().iterate(records)]
    assert delivered == [sale, signup]


def fake_app(subscription: SubscriptionState) -> Any:
    """A Faust app as patch 7 sees it, around a real aiokafka subscription state."""
    client = SimpleNamespace(_subscription=subscription)
    consumer = SimpleNamespace(_thread=SimpleNamespace(_consumer=client), flow_active=True)
    app = SimpleNamespace(
        consumer=consumer, consumer_generation_id=1, tables=SimpleNamespace(_recovery=None)
    )
    consumer.app = app
    return app


def test_a_partition_lags_while_records_known_to_the_client_have_not_reached_the_caller(
    monkeypatch,
):
    async def scenario() -> None:
        members, sales = TopicPartition("members", 0), TopicPartition("transactions", 0)
        subscription = SubscriptionState()
        subscription.assign_from_user({members, sales})
        app = fake_app(subscription)
        lagging = faust_patches.lagging_partitions(app, ["members", "transactions"])
        assignment = subscription.subscription.assignment
        member_state, sale_state = (assignment.state_value(tp) for tp in (members, sales))
        assert lagging("members", 0, None)  # not fetched yet: unknown
        member_state.seek(10)
        # A fetch response at t=1000 saw records 10 and 11 on the broker.
        member_state.highwater, member_state.timestamp = 12, 1000
        assert lagging("members", 0, None)
        member_state.consumed_to(12)  # the client handed them to Faust...
        handed = {TP("members", 0): [SimpleNamespace(offset=10), SimpleNamespace(offset=11)]}

        async def fetched(self: Any, timeout: float) -> Any:
            return handed, None

        monkeypatch.setattr(faust_patches, "_original_wait_next_records", fetched)
        await faust_patches._wait_next_records(app.consumer, 1.0)
        assert lagging("members", 0, None)  # ...which has not passed them on yet
        assert lagging("members", 0, 10)
        assert not lagging("members", 0, 11)  # the caller got them all
        # A later response (t=1500) brought a sale; it left the member partition out (say,
        # it had records buffered): what was appended there since t=1000 is unknown.
        sale_state.seek(0)
        sale_state.highwater, sale_state.timestamp = 1, 1500
        sale_state.consumed_to(1)
        handed = {TP("transactions", 0): [SimpleNamespace(offset=0)]}
        await faust_patches._wait_next_records(app.consumer, 1.0)
        assert lagging("members", 0, 11)
        member_state.timestamp = 1520  # fetched again: nothing more there
        assert not lagging("members", 0, 11)
        app.consumer_generation_id = 2  # a rebalance: what was handed over before is stale
        assert not lagging("transactions", 0, None)
        assert not lagging("daily", 0, None)  # not assigned to this consumer

    asyncio.run(scenario())
