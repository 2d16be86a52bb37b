"""Running a worker process: its data at rest, its signals, its crashes, its exit status.

A worker never lingers. Once it is asked to stop (SIGTERM, SIGINT) or one of its agents or
services crashed, it stops cleanly if it can (offsets committed, RocksDB closed, the group
left) and is gone within ``LOYALTY_SHUTDOWN_GRACE_S`` in any case: past that grace a timer
thread, which needs neither the event loop nor Faust, ends the process with ``os._exit``.
A second SIGTERM or SIGINT ends it at once.

Exit statuses (docs/operations.md):

- 0: stopped by SIGTERM or SIGINT, cleanly;
- 1: crashed (an agent or a service of the worker failed: one log line names the error) or
  could not start (broker unreachable for 30 s, a topic with the wrong partition count);
- 2: invalid program file (``cli.main``);
- 3: a stop asked by a signal did not finish within the grace and was forced.

Nothing is lost by a crash or a forced exit: the input that was not committed is processed
again by the next owner of its partition, and a replayed event changes nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import faust
from faust.worker import Worker
from kafka.errors import KafkaError

from loyalty.streams.settings import Settings

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_INVALID_PROGRAM = 2
EXIT_FORCED = 3

DATA_DIR_MODE = 0o700
UMASK = 0o077
"""Every file and directory the worker creates (RocksDB's included) is its user's alone:
a member's state holds their email, phone and birth date."""


class ExitDeadline:
    """Ends the process with ``os._exit`` if it still runs ``grace_s`` after :meth:`arm`."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, status: int, why: str) -> None:
        """Start the countdown (once: the first reason and status stand)."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.grace_s, self._expire, (status, why))
            self._timer.name = "exit-deadline"
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, status: int, why: str) -> None:
        logger.critical(
            "worker still running %.1f s after %s: exiting now (status %d)",
            self.grace_s,
            why,
            status,
        )
        _flush_logs()
        os._exit(status)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


class StopRequested(BaseException):
    """SIGTERM or SIGINT before the event loop runs (while topics are checked): a
    ``BaseException`` so that no library's ``except Exception`` swallows it."""


class GuardedWorker(Worker):
    """Faust's worker, that cannot outlive a crash or a stop signal by more than the grace.

    Issue 18 saw crashed workers stay up for minutes, their web server answering, their
    group empty, SIGTERM ignored: Faust's stop runs on the event loop, which nothing bounds,
    and mode's signal handlers are the loop's, which run only when the loop turns. Here
    the stop signals have the process's own handlers (they run between any two bytecodes
    of the main thread), and every way to the exit arms an :class:`ExitDeadline`."""

    def __init__(self, app: faust.App, deadline: ExitDeadline, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.deadline = deadline
        self.signalled: signal.Signals | None = None

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        # mode's SIGUSR1 dumps every task's stack to stderr.
        self.loop.add_signal_handler(signal.SIGUSR1, self._on_sigusr1)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        if self.signalled is not None:
            logger.critical("second %s while stopping: exiting now", received.name)
            _flush_logs()
            os._exit(EXIT_CRASHED if self.crashed else EXIT_FORCED)
        self.signalled = received
        logger.warning(
            "%s received: stopping (forced in %.1f s)", received.name, self.deadline.grace_s
        )
        self.deadline.arm(EXIT_CRASHED if self.crashed else EXIT_FORCED, received.name)
        stop = self._on_sigint if received == signal.SIGINT else self._on_sigterm
        if not self.loop.is_closed():  # else the worker is past its stop, exiting
            self.loop.call_soon_threadsafe(stop)

    def _crash(self, reason: BaseException) -> None:
        # mode marks every service of the tree crashed, this root included, whatever
        # service failed; the worker's start then returns and it stops.
        if not self.crashed:
            first_line = (str(reason).splitlines() or [""])[0][:300]
            logger.critical(
                "worker crashed: %s: %s; stopping (exit status %d)",
                type(reason).__name__,
                first_line,
                EXIT_CRASHED,
            )
            self.deadline.arm(EXIT_CRASHED, "a crash")
        super()._crash(reason)
        if not self.loop.is_closed():
            # The crash may come from another thread (the consumer's): wake the loop up.
            self.loop.call_soon_threadsafe(lambda: None)

    def on_worker_shutdown(self) -> None:
        # Reached on every way out of the worker's start: a signal, a crash, a failed start.
        status = EXIT_FORCED if self.signalled is not None and not self.crashed else EXIT_CRASHED
        self.deadline.arm(status, "the stop began")
        super().on_worker_shutdown()


def prepare_data_dir(path: Path) -> None:
    """Create the worker's data directory, mode 0700 (tightened if it exists)."""
    # Faust creates only the last level of the data directory.
    path.mkdir(parents=True, exist_ok=True, mode=DATA_DIR_MODE)
    try:
        os.chmod(path, DATA_DIR_MODE)
    except PermissionError:
        # Not ours (a volume's root owned by root): what the worker creates inside it is
        # still 0700/0600 (the umask).
        logger.warning("cannot set mode %o on %s: not its owner", DATA_DIR_MODE, path)


@contextmanager
def _stop_signals_raise(deadline: ExitDeadline) -> Iterator[None]:
    """Until the worker installs its own handlers, SIGTERM and SIGINT raise
    :class:`StopRequested` (checking topics can wait 30 s for an unreachable broker)."""

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        deadline.arm(EXIT_OK, signal.Signals(signum).name)
        raise StopRequested(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, raise_stop)
    signal.signal(signal.SIGINT, raise_stop)
    yield


def run_worker(settings: Settings) -> int:
    """Run a worker until it is stopped or crashes; return its exit status."""
    from loyalty.agents.topology import create_app
    from loyalty.streams.topics import TopicLayoutError, ensure_topics

    deadline = ExitDeadline(settings.shutdown_grace_s)
    try:
        with _stop_signals_raise(deadline):
            os.umask(UMASK)
            app = create_app(settings)
            prepare_data_dir(settings.data_dir)
            ensure_topics(settings)
            worker = GuardedWorker(app, deadline, loglevel=settings.log_level, quiet=True)
            # Faust's terminal spinner lowers the root logger to DEBUG so that it spins on
            # every record: every Kafka send then builds a debug LogRecord (11% of a
            # worker's CPU in a py-spy profile). A worker has no use for a spinner.
            worker.spinner = None
            worker.execute_from_commandline()
    except StopRequested as stop:
        logger.warning("%s received before the worker started: stopped", stop)
        return EXIT_OK
    except (KafkaError, TopicLayoutError) as error:
        logger.critical("worker cannot start: %s: %s", type(error).__name__, error)
        return EXIT_CRASHED
    except SystemExit as exit:
        # Faust's worker always leaves by SystemExit: 0 after a clean stop, 1 after a crash.
        if isinstance(exit.code, int):
            return exit.code
        return EXIT_OK if exit.code is None else EXIT_CRASHED
    return EXIT_OK
