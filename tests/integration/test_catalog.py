"""The rewards catalog on the real broker.

``loyalty catalog load program/catalog.toml`` publishes the example catalog; a worker's
``GET /catalog`` then lists it, and a record of the ``reward_stock`` changelog (what the
redemption saga writes when it reserves units) changes the reward's ``remaining`` there.
The catalog feed on its own: started before its topics exist, it is ready with an empty
catalog, picks the topics up once they are created, and stops with its service.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loyalty.agents.catalog import DISCOVERY_INTERVAL_S, CatalogFeed
from loyalty.cli.main import main
from loyalty.core.catalog import CatalogView
from loyalty.demo.worker_process import WorkerProcess
from loyalty.schemas.catalog import Reward, encode_reward, load_catalog_file
from loyalty.schemas.state import RewardStock, encode_stock
from loyalty.streams.settings import PROGRAM_DIR, Settings, to_env
from loyalty.streams.topics import changelog_topic_name, ensure_topics
from tests.integration.harness import get, isolated_settings, produce

EXAMPLE_CATALOG = PROGRAM_DIR / "catalog.toml"


def wait_for_catalog(url: str, condition: Any, timeout: float, what: str) -> list[dict[str, Any]]:
    """GET ``url`` until it is 200 with a body meeting ``condition``; fail after ``timeout``
    s. A 503 must carry ``Retry-After``."""
    deadline = time.monotonic() + timeout
    while True:
        reply = get(url)
        if reply.status == 200 and condition(reply.body):
            return list(reply.body)
        assert reply.status in (200, 503), reply
        if reply.status == 503:
            assert reply.body["error"] == "catalog_loading"
            assert int(reply.headers["Retry-After"]) >= 1
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last {reply}")
        time.sleep(0.1)  # polling interval, not synchronisation


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("catalog")
    settings = isolated_settings(kafka_bootstrap, tmp, partitions=2)
    ensure_topics(settings)
    process = WorkerProcess(settings, tmp / "worker.log").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_loaded_catalog_is_listed_with_live_stock(worker, monkeypatch, capsys):
    settings = worker.settings
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    assert main(["catalog", "load", str(EXAMPLE_CATALOG)]) == 0
    printed = capsys.readouterr().out
    assert "5 rewards published to " + settings.topics.catalog in printed
    assert "published fuel-voucher-5eur: '5 EUR fuel voucher', 500 points, unlimited" in printed

    base = settings.advertised_url
    listing = wait_for_catalog(
        f"{base}/catalog", lambda body: len(body) == 5, timeout=30, what="the 5 rewards"
    )
    rewards = {reward.reward_id: reward for reward in load_catalog_file(EXAMPLE_CATALOG)}
    assert [entry["reward_id"] for entry in listing] == sorted(rewards)
    for entry in listing:
        reward = rewards[entry["reward_id"]]
        assert entry == {
            "reward_id": reward.reward_id,
            "name": reward.name["en"],
            "cost_points": reward.cost_points,
            "stock": reward.stock,
            "remaining": reward.stock,
            "active": reward.active,
            "per_member_limit": reward.per_member_limit,
        }
    polish = get(f"{base}/catalog?locale=pl").body
    assert [entry["name"] for entry in polish] == [
        rewards[entry["reward_id"]].name["pl"] for entry in polish
    ]

    # What the reward's partition writes when it reserves 7 coffees.
    stock = RewardStock(7, {"request-1": [7, "reserved"]})
    changelog = changelog_topic_name(settings.app_id, "reward_stock")
    produce(settings.kafka_bootstrap, changelog, [(b"coffee", encode_stock(stock))])
    started = time.monotonic()
    listing = wait_for_catalog(
        f"{base}/catalog",
        lambda body: {entry["reward_id"]: entry["remaining"] for entry in body}["coffee"] == 493,
        timeout=10,
        what="coffee's remaining stock to drop to 493",
    )
    print(f"stock record shown by GET /catalog after {time.monotonic() - started:.3f} s")
    assert {entry["reward_id"]: entry["remaining"] for entry in listing} == {
        "car-wash": 40,
        "coffee": 493,
        "fuel-voucher-5eur": None,
        "screen-wash-5l": 120,
        "sunshade-summer-2025": 200,
    }


def test_schemathesis_finds_the_new_pages_as_documented(worker, tmp_path):
    """``GET /catalog`` and ``GET /members/{id}/redemptions`` against the document the
    worker serves (the member profile API test covers every page with two workers)."""
    # A member page is 503 until the worker holds the member partitions: wait for that.
    base = worker.settings.advertised_url
    deadline = time.monotonic() + 30
    while (reply := get(f"{base}/members/nobody/redemptions")).status == 503:
        assert time.monotonic() < deadline, f"the worker holds no partition yet: {reply}"
        time.sleep(int(reply.headers["Retry-After"]))  # the server's advised retry interval
    assert (reply.status, reply.body["error"]) == (404, "unknown_member")
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base}/openapi.json",
        "--include-path-regex",
        "^/(catalog|members/\\{member_id\\}/redemptions)$",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance,negative_data_rejection",
        "--max-examples",
        "50",
        "--seed",
        "6",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Selected: 2/" in run.stdout and "Tested: 2" in run.stdout, run.stdout[-3000:]


def test_the_feed_waits_for_topics_created_after_it_started(kafka_bootstrap, tmp_path):
    settings = isolated_settings(kafka_bootstrap, tmp_path, partitions=2)
    coffee = Reward("coffee", {"en": "Coffee"}, 80, 10)

    async def scenario(settings: Settings) -> None:
        view = CatalogView()
        feed = CatalogFeed(settings, view)
        await feed.start()
        try:
            # No topic yet: nothing to read, so the (empty) view is ready.
            await wait_until(lambda: view.ready, 10, "the empty view to be ready")
            assert view.listing() == []
            await asyncio.to_thread(ensure_topics, settings)
            await asyncio.to_thread(
                produce,
                settings.kafka_bootstrap,
                settings.topics.catalog,
                [(b"coffee", encode_reward(coffee))],
            )
            await asyncio.to_thread(
                produce,
                settings.kafka_bootstrap,
                changelog_topic_name(settings.app_id, "reward_stock"),
                [(b"coffee", encode_stock(RewardStock(4, {})))],
            )
            await wait_until(
                lambda: view.remaining("coffee") == 6,
                DISCOVERY_INTERVAL_S * 3,
                "the reward and its stock, from the topics created after the start",
            )
            assert view.get("coffee") == coffee
        finally:
            await feed.stop()
        # The feed's task and its consumer's background tasks are gone.
        await asyncio.sleep(0)
        running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        assert running == []

    asyncio.run(scenario(settings))


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval, not synchronisation
