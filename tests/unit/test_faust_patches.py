import asyncio
import time
from dataclasses import replace

from localkafka.broker import free_port
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
