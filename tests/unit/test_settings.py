from pathlib import Path

from loyalty.streams.settings import Settings, from_env, to_env


def test_defaults_without_environment():
    settings = from_env({})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.topics.transactions == "loyalty.transactions"
    assert settings.topics.deadletter == "loyalty.deadletter"


def test_every_documented_variable_is_read():
    settings = from_env(
        {
            "LOYALTY_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "LOYALTY_DATA_DIR": "/var/lib/loyalty",
            "LOYALTY_WEB_PORT": "7000",
            "LOYALTY_PROGRAM": "/etc/loyalty/program.toml",
            "LOYALTY_PARTITIONS": "16",
            "LOYALTY_TOPIC_LEDGER": "acme.ledger",
            "LOYALTY_SHUTDOWN_GRACE_S": "4.5",
            "LOYALTY_DEADLETTER_RETENTION_DAYS": "2",
        }
    )
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.data_dir == Path("/var/lib/loyalty")
    assert settings.web_port == 7000
    assert settings.program_path == Path("/etc/loyalty/program.toml")
    assert settings.partitions == 16
    assert settings.topics.ledger == "acme.ledger"
    assert settings.topics.rewards == "loyalty.rewards"
    assert settings.shutdown_grace_s == 4.5
    assert settings.deadletter_retention_days == 2.0


def test_to_env_round_trips():
    settings = Settings(
        kafka_bootstrap="k:1",
        data_dir=Path("/d"),
        web_port=1,
        partitions=3,
        app_id="x",
        shutdown_grace_s=2.5,
        deadletter_retention_days=0.25,
    )
    assert from_env(to_env(settings)) == settings


def test_advertised_url_names_the_host_when_binding_every_interface():
    import socket

    assert Settings(web_host="10.0.0.5", web_port=7000).advertised_url == "http://10.0.0.5:7000"
    everywhere = Settings(web_host="0.0.0.0", web_port=7000).advertised_url
    assert everywhere == f"http://{socket.gethostname()}:7000"
    explicit = Settings(web_host="0.0.0.0", web_url="http://worker-2:6066")
    assert explicit.advertised_url == "http://worker-2:6066"


def test_peer_and_http_settings():
    settings = from_env(
        {
            "LOYALTY_PEER_HOSTS": " worker-1, worker-2 ,,10.0.0.0/8",
            "LOYALTY_PEER_TOKEN": "s3cret-token",
            "LOYALTY_HTTP_TIMEOUT_S": "2.5",
        }
    )
    assert settings.peer_hosts == ("worker-1", "worker-2", "10.0.0.0/8")
    assert settings.peer_token == "s3cret-token"
    assert settings.http_timeout_s == 2.5
    assert "s3cret" not in repr(settings)  # settings may be logged; the token is not
    assert from_env(to_env(settings)) == settings
    defaults = Settings()
    assert defaults.peer_hosts == ("127.0.0.1", "localhost", "::1")
    assert (defaults.peer_token, defaults.http_timeout_s) == ("", 10.0)
