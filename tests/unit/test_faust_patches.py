import asyncio
from dataclasses import replace

from streams.app import create_app
from streams.settings import Settings


def test_worker_consumer_fetch_wait_comes_from_settings(tmp_path):
    # Faust fixes it at 1500 ms, which stalled deliveries for a second (patch 5).
    settings = replace(Settings(), data_dir=tmp_path, fetch_max_wait_ms=7)
    app = create_app(settings)

    async def create_consumer():  # aiokafka wants a running loop
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        await consumer.stop()
        return consumer

    assert asyncio.run(create_consumer())._fetch_max_wait_ms == 7
