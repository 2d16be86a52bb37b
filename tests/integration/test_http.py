"""The worker's HTTP server against hostile clients and a hostile group member, on the real
broker.

One honest worker shares a consumer group (6 partitions) with two rogue ones: real workers
that do not know the honest one's ``LOYALTY_PEER_TOKEN`` and advertise URLs of the test's
choosing, as anyone allowed to join the group can. Rogue A advertises
``http://127.0.0.1:<fake>/anything?q=``, where a fake owner answers every request with a
forged balance (and a made-up proof); rogue B advertises ``http://localhost:<fake>/b``, a
host the honest worker's ``LOYALTY_PEER_HOSTS`` leaves out. The honest worker must never
relay the fake's answer, must ask the fake only for ``/members/...`` (no path or query of
the group's metadata), must not follow the fake's redirect, and must never contact a host
that is not allowed. Then: Faust's own pages are 404, an absolute-form request line is 400,
and slow or idle connections are closed after ``LOYALTY_HTTP_TIMEOUT_S``.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from loyalty.agents.openapi import OWNER_HEADER
from loyalty.demo.worker_process import WorkerProcess
from loyalty.localkafka.broker import free_port
from loyalty.streams.partitioning import owner_partition
from loyalty.streams.peers import NONCE_HEADER, PROOF_HEADER, SIGNATURE_HEADER
from loyalty.streams.settings import Settings
from loyalty.streams.topics import ensure_topics
from tests.integration.harness import Reply, get, isolated_settings, member_url, wait_for_group

PARTITIONS = 6
HTTP_TIMEOUT_S = 2.0
FORGED_BALANCE = 999_999


class FakeOwner:
    """A plain HTTP server that answers like an owner would, with a forged balance, and
    records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                fake.requests.append((self.path, dict(self.headers)))
                if self.path.endswith("/redemptions"):
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{fake.port}/stolen")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = orjson.dumps({"member_id": "forged", "balance": FORGED_BALANCE})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header(OWNER_HEADER, f"http://127.0.0.1:{fake.port}")
                self.send_header(PROOF_HEADER, "0" * 64)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Group:
    honest: WorkerProcess
    fake: FakeOwner
    probes: dict[int, str]
    """Partition -> a member id placed in it (no member is on record)."""

    @property
    def base(self) -> str:
        return self.honest.settings.advertised_url


def worker(settings: Settings, tmp: Path, name: str, **changes: object) -> WorkerProcess:
    changed = replace(settings, data_dir=tmp / f"state-{name}", web_port=free_port(), **changes)
    return WorkerProcess(changed, tmp / f"worker-{name}.log")


@pytest.fixture(scope="module")
def group(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    tmp = tmp_path_factory.mktemp("http")
    settings = replace(
        isolated_settings(kafka_bootstrap, tmp, partitions=PARTITIONS),
        http_timeout_s=HTTP_TIMEOUT_S,
    )
    ensure_topics(settings)
    fake = FakeOwner()
    workers = [
        worker(settings, tmp, "honest", peer_hosts=("127.0.0.1", "::1")),
        worker(
            settings,
            tmp,
            "rogue-a",
            web_url=f"http://127.0.0.1:{fake.port}/anything?q=",
            peer_token=secrets.token_hex(32),
        ),
        worker(
            settings,
            tmp,
            "rogue-b",
            web_url=f"http://localhost:{fake.port}/b",
            peer_token=secrets.token_hex(32),
        ),
    ]
    probes: dict[int, str] = {}
    for index in range(1000):
        member = f"probe-{index}"
        probes.setdefault(owner_partition(member.encode(), PARTITIONS), member)
    assert len(probes) == PARTITIONS
    try:
        for started in workers:
            started.start()
        for started in workers:
            started.wait_ready()
        wait_for_group(kafka_bootstrap, settings.app_id, members=3, timeout=90)
        yield Group(workers[0], fake, probes)
    finally:
        for started in workers:
            started.stop()
        fake.close()


NOT_PROVEN = "did not prove"
NOT_ALLOWED = "LOYALTY_PEER_HOSTS"


def outcome(reply: Reply, base: str) -> str | None:
    """How the honest worker settled a probe: read it itself, refused rogue A's forged
    answer or refused to contact rogue B; None while the group rebalances."""
    if reply.status == 404 and reply.headers.get(OWNER_HEADER) == base:
        return "honest"
    if reply.status == 503 and NOT_PROVEN in reply.body["message"]:
        return "rogue-a"
    if reply.status == 503 and NOT_ALLOWED in reply.body["message"]:
        return "rogue-b"
    return None


def test_a_rogue_group_member_is_never_trusted_nor_given_a_path(group):
    deadline = time.monotonic() + 90
    while True:
        replies = {
            partition: get(member_url(group.base, m)) for partition, m in group.probes.items()
        }
        for reply in replies.values():
            # Never the forged answer: only the honest worker's own, or a 503.
            assert reply.status in (404, 503), reply
            assert FORGED_BALANCE not in reply.body.values()
            if reply.status == 503:
                assert reply.body["error"] == "owner_unavailable"
                assert int(reply.headers["Retry-After"]) >= 1
        outcomes = {p: outcome(reply, group.base) for p, reply in replies.items()}
        if None not in outcomes.values() and len(set(outcomes.values())) == 3:
            break
        assert time.monotonic() < deadline, f"the group did not settle: {replies}"
        time.sleep(0.2)  # polling interval, not synchronisation

    forwarded = {group.probes[p] for p, where in outcomes.items() if where == "rogue-a"}
    for partition, where in outcomes.items():
        if where == "rogue-a":
            member = group.probes[partition]
            for suffix in ("/ledger?limit=7", "/redemptions"):
                reply = get(member_url(group.base, member, suffix))
                assert reply.status == 503, reply
                assert reply.body["error"] == "owner_unavailable"
    paths = [path for path, _ in group.fake.requests]
    print(f"\noutcomes by partition: {outcomes}\nthe fake owner was asked for: {set(paths)}")
    # Only what the honest worker validated, rebuilt: no /anything, no q=, no /b, no /stolen.
    allowed_paths = {f"/members/{urllib.parse.quote(m, safe='')}" for m in forwarded}
    allowed_paths |= {f"{path}/ledger?limit=7" for path in allowed_paths} | {
        f"{path}/redemptions" for path in allowed_paths
    }
    assert set(paths) <= allowed_paths
    assert any(path.endswith("/redemptions") for path in paths)  # the redirect: not followed
    for _, headers in group.fake.requests:
        assert len(headers[NONCE_HEADER]) == 32 and len(headers[SIGNATURE_HEADER]) == 64
    # Rogue B's host is not an allowed peer: its partitions were never fetched from.
    unasked = {group.probes[p] for p, where in outcomes.items() if where == "rogue-b"}
    asked = {urllib.parse.unquote(path.split("?")[0].split("/")[2]) for path in paths}
    assert unasked and asked == forwarded and not asked & unasked


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/table/",
        "/table/member_to_state/probe-0/",
        "/table/referral_code_to_member/ABC123/",
        "/router/",
        "/router/member_to_state/probe-0/",
        "/graph/",
        "/assignment/",
        "/performance/",
    ],
)
def test_faust_pages_are_not_served(group, path):
    reply = get(group.base + path)
    assert (reply.status, reply.body["error"]) == (404, "not_found")


def raw_exchange(settings: Settings, request: bytes, timeout: float) -> bytes:
    """Send ``request`` on a new connection; everything the server sends until it closes."""
    with socket.create_connection((settings.web_host, settings.web_port), timeout=timeout) as s:
        s.sendall(request)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def test_an_absolute_form_request_line_is_400(group):
    for member in group.probes.values():  # members of each worker, forwarded ones included
        request = f"GET http://x/members/{member} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        answer = raw_exchange(group.honest.settings, request.encode() + b"\r\n", timeout=10)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer
        assert orjson.loads(body)["error"] == "invalid_request_target"


def seconds_until_closed(settings: Settings, request: bytes, slowly: bool) -> tuple[float, bytes]:
    """Send ``request`` (one byte per 0.25 s if ``slowly``), then wait for the server to
    close the connection; the seconds that took from the connection on, and what came."""
    margin = 5.0
    with socket.create_connection((settings.web_host, settings.web_port)) as s:
        started = time.monotonic()
        s.settimeout(HTTP_TIMEOUT_S + margin)
        received = b""
        for index, byte in enumerate(request):
            if slowly and index:
                s.settimeout(0.25)  # pacing the slow client, and noticing the close meanwhile
                try:
                    if not s.recv(65536):
                        return time.monotonic() - started, received
                except TimeoutError:
                    pass
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started, received
        s.settimeout(max(0.1, started + HTTP_TIMEOUT_S + margin - time.monotonic()))
        while chunk := s.recv(65536):
            received += chunk
        return time.monotonic() - started, received


def test_half_sent_trickled_and_idle_connections_are_closed_after_the_timeout(group):
    settings = group.honest.settings
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    half, _ = seconds_until_closed(settings, request[:9], slowly=False)
    trickled, nothing = seconds_until_closed(settings, request * 10, slowly=True)
    idle, answer = seconds_until_closed(settings, request, slowly=False)  # kept alive
    print(f"\nclosed after {half:.2f} s (half a line), {trickled:.2f} s (trickle), {idle:.2f} s")
    assert answer.startswith(b"HTTP/1.1 200 ") and nothing == b""
    for elapsed in (half, trickled, idle):
        assert HTTP_TIMEOUT_S * 0.9 <= elapsed < HTTP_TIMEOUT_S + 2
