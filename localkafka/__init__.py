"""A real single-node Apache Kafka broker (KRaft) for local runs and tests, without Docker."""

from loyalty.localkafka.broker import (
    KAFKA_VERSION,
    LOCAL_SASL_USERS,
    BrokerError,
    BrokerStatus,
    free_port,
    install,
    kafka_home,
    sasl_client_options,
    start,
    status,
    stop,
    wait_until_ready,
)

__all__ = [
    "KAFKA_VERSION",
    "LOCAL_SASL_USERS",
    "BrokerError",
    "BrokerStatus",
    "free_port",
    "install",
    "kafka_home",
    "sasl_client_options",
    "start",
    "status",
    "stop",
    "wait_until_ready",
]
