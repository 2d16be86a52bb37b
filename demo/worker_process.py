"""A worker in a child process: used by the demo and by the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from loyalty.streams.settings import Settings, to_env


class WorkerProcess:
    """``loyalty worker`` with the given settings, its output going to ``log_path``."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **to_env(self.settings), "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "loyalty.cli.main", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 60.0, assigned: bool = False) -> None:
        """Return once the worker's HTTP server answers (``assigned``: once ``/health/ready``
        says 200, the worker holding partitions with its tables recovered); raise if it
        died or timed out."""
        path = "/health/ready" if assigned else "/metrics"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"worker exited; log tail:\n{self.log_tail()}")
            if self.health(path)[0] == 200:
                return
            time.sleep(0.1)  # polling interval, not synchronisation
        raise TimeoutError(f"worker not ready after {timeout}s; log tail:\n{self.log_tail()}")

    def health(self, path: str = "/health/ready") -> tuple[int | None, bytes]:
        """Status and body of a GET of ``path``; status None if nothing answered."""
        url = f"http://{self.settings.web_host}:{self.settings.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return None, b""

    def metrics(self) -> str:
        url = f"http://{self.settings.web_host}:{self.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig``, wait for the exit (SIGKILL after ``timeout``); return the exit code."""
        if self.process is None:
            return 0
        if self.alive:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
