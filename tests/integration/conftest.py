"""Shared fixtures of the integration tests: one real Kafka broker per test session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from loyalty.localkafka import broker

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as ``integration``."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker.BrokerStatus]:
    """A real single-node Kafka broker on a free port, stopped at the end of the session."""
    broker.install()
    data_dir = tmp_path_factory.mktemp("kafka")
    started = broker.start(port=broker.free_port(), data_dir=data_dir)
    try:
        yield started
    finally:
        broker.stop(data_dir)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: broker.BrokerStatus) -> str:
    """Bootstrap address ``127.0.0.1:<port>`` of the session's Kafka broker."""
    assert kafka_broker.bootstrap is not None
    return kafka_broker.bootstrap
