"""Install and run a real single-node Apache Kafka broker (KRaft mode) without Docker.

The broker jars are resolved from Maven Central with ``mvn`` (see ``pom.xml``) into a cache
directory once; the broker then runs as a detached ``java`` process whose files (configuration,
storage, log, pid) live in one data directory.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from kafka import KafkaAdminClient

KAFKA_VERSION = "4.1.2"

_PACKAGE_DIR = Path(__file__).resolve().parent
_POM = _PACKAGE_DIR / "pom.xml"
_LOG4J_CONFIG = _PACKAGE_DIR / "log4j2.properties"
_KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
_DEFAULT_DATA_DIR = Path(".local/kafka")
_HOST = "127.0.0.1"
_POLL_INTERVAL = 0.2
_TAIL_LINES = 40

# The user names and passwords of the SASL/PLAIN listener of a broker started with
# ``sasl_users`` (``loyalty kafka start --sasl``): one principal per role of the ACL plan
# (``streams.acls``). ``admin`` is the super user; the broker authenticates as ``admin`` to
# itself and to its controller. Local and test use only: the passwords are in this file.
LOCAL_SASL_USERS: Mapping[str, str] = MappingProxyType(
    {
        "admin": "admin-secret",
        "worker": "worker-secret",
        "pos": "pos-secret",
        "station": "station-secret",
        "crm": "crm-secret",
        "operator": "operator-secret",
        "notifications": "notifications-secret",
    }
)
SASL_ADMIN = "admin"
# Written inside a JAAS option between double quotes: no quote, backslash or semicolon.
_SASL_CREDENTIAL = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
_STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"

# Brokers launched by this Python process, kept so they can be reaped (no zombies, no
# "subprocess still running" warnings) and so that an early exit is noticed at once.
_launched: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The local Kafka broker could not be installed, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    """State of the broker that belongs to ``data_dir``."""

    running: bool
    pid: int | None
    port: int | None
    bootstrap: str | None
    data_dir: Path
    sasl: bool = False
    """Clients authenticate with SASL/PLAIN (``SASL_PLAINTEXT``) and ACLs apply."""


def kafka_home() -> Path:
    """Return the cache directory of the Kafka jars.

    ``$LOYALTY_KAFKA_HOME`` if set, else ``~/.cache/loyalty-stream/kafka-<KAFKA_VERSION>``.
    """
    configured = os.environ.get("LOYALTY_KAFKA_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "loyalty-stream" / f"kafka-{KAFKA_VERSION}"


def install(home: Path | None = None) -> Path:
    """Make sure the Kafka jars are in ``<home>/libs`` and return that directory.

    Cached: once a copy has completed (marker file ``<home>/.complete``), this returns at once
    without running Maven or Java. Otherwise Maven copies the jars into a temporary directory
    that is then renamed into place, so an interrupted install never looks complete.
    """
    home = (home or kafka_home()).expanduser().resolve()
    libs = home / "libs"
    if _is_installed(home):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing right now
        if _is_installed(home):
            return libs
        _java()  # fail early and clearly: Maven and the broker both need Java
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH; install Maven 3.8+ to fetch Kafka")
        with tempfile.TemporaryDirectory(prefix=".install-", dir=home) as tmp:
            staging = Path(tmp)
            shutil.copy(_POM, staging / "pom.xml")  # Maven may write target/ next to the POM
            command = [
                mvn, "-q", "-B", "-f", str(staging / "pom.xml"),
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}",
            ]  # fmt: skip
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
            )
            if result.returncode != 0 or not (staging / "libs" / _KAFKA_JAR).is_file():
                output = _tail(result.stdout + result.stderr)
                raise BrokerError(
                    f"Maven failed to fetch Kafka {KAFKA_VERSION} (exit {result.returncode}):\n"
                    f"{output}"
                )
            (home / ".complete").unlink(missing_ok=True)
            if libs.exists():
                shutil.rmtree(libs)
            os.replace(staging / "libs", libs)
            (staging / ".complete").write_text(KAFKA_VERSION + "\n")
            os.replace(staging / ".complete", home / ".complete")
    return libs


def start(
    port: int = 9092,
    data_dir: Path = _DEFAULT_DATA_DIR,
    timeout: float = 90.0,
    sasl_users: Mapping[str, str] | None = None,
) -> BrokerStatus:
    """Start a broker on ``127.0.0.1:<port>`` keeping its files in ``data_dir``.

    Installs Kafka if needed and formats the KRaft storage on first use. Returns once the
    broker answers a metadata request. If the broker of ``data_dir`` is already running, this
    is a no-op that returns its status (its port may then differ from ``port``).

    With ``sasl_users`` (user name to password, e.g. :data:`LOCAL_SASL_USERS`; it must hold
    ``admin``), clients must authenticate with SASL/PLAIN over ``SASL_PLAINTEXT``, and the
    StandardAuthorizer allows nothing that no ACL grants, except to the super user
    ``User:admin`` (``allow.everyone.if.no.acl.found=false``). Without it the broker is
    open (PLAINTEXT, no authorizer).

    Raises ``BrokerError`` if the port is taken by another process, if the running broker of
    ``data_dir`` was started with another security setup, or if the broker exits or is not
    ready within ``timeout`` seconds (the message then ends with the broker log tail).
    """
    data_dir = data_dir.resolve()
    deadline = time.monotonic() + timeout
    if sasl_users is not None:
        _check_sasl_users(sasl_users)
    probe = _probe_options(sasl_users)
    libs = install()
    current = status(data_dir)
    if current.running:
        if current.bootstrap is None:
            raise BrokerError(
                f"a Kafka broker (pid {current.pid}) runs from {data_dir} but its state file "
                "is missing; stop it first"
            )
        if current.sasl != (sasl_users is not None):
            running = "with" if current.sasl else "without"
            raise BrokerError(
                f"the Kafka broker of {data_dir} (pid {current.pid}) runs {running} SASL; "
                "stop it first"
            )
        _wait_ready(current.bootstrap, deadline, options=probe)
        return current
    if not _port_is_free(port):
        raise BrokerError(f"port {port} on {_HOST} is already in use by another process")

    java = _java()
    data_dir.mkdir(parents=True, exist_ok=True)
    controller_port = _controller_port(data_dir, port)
    properties = data_dir / "server.properties"
    properties.write_text(_server_properties(port, controller_port, data_dir / "logs", sasl_users))
    if not (data_dir / "logs" / "meta.properties").exists():
        _format_storage(java, libs, properties)

    log_file = data_dir / "broker.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*_java_command(java, libs), "-Xmx512m", "kafka.Kafka", str(properties)],
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the caller's terminal and Ctrl-C
        )
    _launched[process.pid] = process
    _pid_file(data_dir).write_text(f"{process.pid}\n")
    sasl = sasl_users is not None
    state = {
        "port": port,
        "controller_port": controller_port,
        "kafka_version": KAFKA_VERSION,
        "sasl": sasl,
    }
    _state_file(data_dir).write_text(json.dumps(state) + "\n")

    bootstrap = f"{_HOST}:{port}"
    try:
        _wait_ready(bootstrap, deadline, alive=lambda: process.poll() is None, options=probe)
    except BrokerError as error:
        stop(data_dir, timeout=10.0)
        raise BrokerError(f"{error}\n--- tail of {log_file} ---\n{_tail_file(log_file)}") from None
    return BrokerStatus(True, process.pid, port, bootstrap, data_dir, sasl)


def stop(data_dir: Path = _DEFAULT_DATA_DIR, timeout: float = 30.0) -> bool:
    """Stop the broker of ``data_dir``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Returns True if a broker was stopped, False if none was running.
    """
    data_dir = data_dir.resolve()
    pid = _running_pid(data_dir)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout):
            _signal(pid, signal.SIGKILL)
            if not _wait_exit(pid, 10.0):
                raise BrokerError(f"Kafka broker (pid {pid}) did not exit after SIGKILL")
    _pid_file(data_dir).unlink(missing_ok=True)
    return pid is not None


def status(data_dir: Path = _DEFAULT_DATA_DIR) -> BrokerStatus:
    """Report whether the broker process of ``data_dir`` is alive, and where it listens."""
    data_dir = data_dir.resolve()
    pid = _running_pid(data_dir)
    if pid is None:
        return BrokerStatus(False, None, None, None, data_dir)
    state = _read_state(data_dir)
    port = state.get("port")
    sasl = state.get("sasl") is True
    if not isinstance(port, int):
        return BrokerStatus(True, pid, None, None, data_dir, sasl)
    return BrokerStatus(True, pid, port, f"{_HOST}:{port}", data_dir, sasl)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_ready(
    bootstrap: str, timeout: float, sasl_users: Mapping[str, str] | None = None
) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request (as ``admin`` of
    ``sasl_users`` over SASL/PLAIN if given).

    Raises ``BrokerError`` if it does not within ``timeout`` seconds.
    """
    _wait_ready(bootstrap, time.monotonic() + timeout, options=_probe_options(sasl_users))


def sasl_client_options(username: str, password: str) -> dict[str, str]:
    """kafka-python client options that log in to a ``sasl_users`` broker as ``username``."""
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }


# --- installation -------------------------------------------------------------------------


def _is_installed(home: Path) -> bool:
    marker = home / ".complete"
    try:
        complete = marker.read_text().strip() == KAFKA_VERSION
    except OSError:
        return False
    return complete and (home / "libs" / _KAFKA_JAR).is_file()


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java is not on PATH (and JAVA_HOME is not set); install Java 17+")
    return java


def _java_command(java: str, libs: Path) -> list[str]:
    return [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}"]


# --- broker configuration and storage -------------------------------------------------------


def _server_properties(
    port: int, controller_port: int, log_dir: Path, sasl_users: Mapping[str, str] | None = None
) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{_HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{_HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The engine creates its topics explicitly.
        "auto.create.topics.enable": "false",
        # Dead letters can carry a 1 MB original payload, base64-encoded.
        "message.max.bytes": "4194304",
    }
    if sasl_users is not None:
        settings.update(_sasl_properties(port, controller_port, sasl_users))
    lines = [f"{key}={value}" for key, value in settings.items()]
    return "# Written by localkafka/broker.py on every start.\n" + "\n".join(lines) + "\n"


def _sasl_properties(
    port: int, controller_port: int, sasl_users: Mapping[str, str]
) -> dict[str, str]:
    """SASL/PLAIN on both listeners, and the StandardAuthorizer with ``admin`` as super user.

    The controller listener authenticates too: in KRaft a client may send admin requests
    (CreateAcls among them) straight to a controller, so an unauthenticated controller
    listener would need ``User:ANONYMOUS`` as a super user, which would let anyone on this
    host grant themselves anything. The broker logs in to it (and to itself, the
    inter-broker listener) as ``admin``.
    """
    password = sasl_users[SASL_ADMIN]
    users = " ".join(f'user_{name}="{secret}"' for name, secret in sasl_users.items())
    jaas = f'{_PLAIN_LOGIN_MODULE} required username="{SASL_ADMIN}" password="{password}" {users};'
    return {
        "listeners": f"SASL_PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{_HOST}:{port}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "listener.name.controller.plain.sasl.jaas.config": jaas,
        "authorizer.class.name": _STANDARD_AUTHORIZER,
        "super.users": f"User:{SASL_ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
    }


def _check_sasl_users(sasl_users: Mapping[str, str]) -> None:
    if SASL_ADMIN not in sasl_users:
        raise BrokerError(f"sasl_users must include the super user {SASL_ADMIN!r}")
    for name, secret in sasl_users.items():
        if not (_SASL_CREDENTIAL.fullmatch(name) and _SASL_CREDENTIAL.fullmatch(secret)):
            raise BrokerError(
                f"SASL user {name!r}: names and passwords may hold only letters, digits, "
                "'.', '_' and '-'"
            )


def _probe_options(sasl_users: Mapping[str, str] | None) -> dict[str, str]:
    if sasl_users is None:
        return {}
    return sasl_client_options(SASL_ADMIN, sasl_users[SASL_ADMIN])


def _controller_port(data_dir: Path, port: int) -> int:
    """Reuse the controller port of the previous run when it is still free."""
    previous = _read_state(data_dir).get("controller_port")
    if isinstance(previous, int) and previous != port and _port_is_free(previous):
        return previous
    while True:
        candidate = free_port()
        if candidate != port:
            return candidate


def _format_storage(java: str, libs: Path, properties: Path) -> None:
    command = [
        *_java_command(java, libs), "kafka.tools.StorageTool", "format",
        "-t", _random_cluster_id(), "-c", str(properties),
    ]  # fmt: skip
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BrokerError(
            f"formatting the Kafka storage failed (exit {result.returncode}):\n"
            f"{_tail(result.stdout + result.stderr)}"
        )


def _random_cluster_id() -> str:
    """Same format as ``kafka-storage.sh random-uuid``: a URL-safe base64 UUID, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka avoids ids that look like a CLI option
            return cluster_id


# --- process and readiness ----------------------------------------------------------------


def _pid_file(data_dir: Path) -> Path:
    return data_dir / "broker.pid"


def _state_file(data_dir: Path) -> Path:
    return data_dir / "broker.json"


def _read_state(data_dir: Path) -> dict[str, object]:
    try:
        state = json.loads(_state_file(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _running_pid(data_dir: Path) -> int | None:
    """The pid from the pid file if that process is alive and is this data_dir's broker."""
    try:
        pid = int(_pid_file(data_dir).read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: guard against a recycled pid
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            return None
        properties = str(data_dir / "server.properties").encode()
        if b"kafka.Kafka" not in arguments or properties not in arguments:
            return None
    return pid


def _alive(pid: int) -> bool:
    process = _launched.get(pid)
    if process is not None:
        if process.poll() is None:
            return True
        del _launched[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
        os.kill(pid, signum)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Java's server sockets, so a port in TIME_WAIT still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _wait_ready(
    bootstrap: str,
    deadline: float,
    alive: Callable[[], bool] | None = None,
    options: Mapping[str, str] | None = None,
) -> None:
    while True:
        if alive is not None and not alive():
            raise BrokerError(f"Kafka broker for {bootstrap} exited during startup")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(f"Kafka broker at {bootstrap} not ready in time")
        if _answers_metadata(bootstrap, min(remaining, 5.0), options or {}):
            return
        time.sleep(_POLL_INTERVAL)


def _answers_metadata(bootstrap: str, timeout: float, client_options: Mapping[str, str]) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:  # cheap and quiet check first: is anything listening yet?
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    timeout_ms = max(int(timeout * 1000), 500)
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "client_id": "localkafka-probe",
        "request_timeout_ms": timeout_ms,
        **client_options,
    }
    # kafka-python 2.x and 3.x name the bootstrap timeout differently.
    for name in ("api_version_auto_timeout_ms", "bootstrap_timeout_ms"):
        if name in KafkaAdminClient.DEFAULT_CONFIG:
            options[name] = timeout_ms
    try:
        admin = KafkaAdminClient(**options)
    except Exception:  # any failure just means "not ready yet"
        return False
    try:
        admin.list_topics()
    except Exception:
        return False
    finally:
        admin.close()
    return True


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_TAIL_LINES:])


def _tail_file(path: Path) -> str:
    try:
        return _tail(path.read_text(errors="replace"))
    except OSError as error:
        return f"(cannot read {path}: {error})"
