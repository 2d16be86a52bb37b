"""The worker's lifecycle parts without Kafka: the exit deadline, the data directory's mode,
the agent supervisor, readiness answers (``cli.worker``, ``streams.app``,
``agents.health``)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from mode import Service
from mode.supervisors import OneForOneSupervisor

from loyalty.agents.health import Readiness
from loyalty.agents.openapi import OPENAPI_DOCUMENT
from loyalty.cli.worker import EXIT_FORCED, prepare_data_dir
from loyalty.streams.app import AgentSupervisor
from loyalty.streams.settings import Settings
from loyalty.streams.topics import deadletter_configs, deadletter_retention_ms

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, timeout: float) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - started


def test_an_armed_deadline_ends_a_process_stuck_in_its_main_thread():
    code, stderr, took = run_python(
        "import logging, threading\n"
        "from cli.worker import ExitDeadline\n"
        "logging.basicConfig()\n"
        "deadline = ExitDeadline(0.2)\n"
        "deadline.arm(3, 'the test')\n"
        "deadline.arm(1, 'a second reason')  # the first one stands\n"
        "threading.Event().wait()  # a stop that never finishes\n",
        timeout=60,
    )
    assert code == EXIT_FORCED == 3
    assert "still running 0.2 s after the test: exiting now (status 3)" in stderr


def test_a_process_that_ends_in_time_is_not_cut_short():
    code, _, _ = run_python(
        "from cli.worker import ExitDeadline\n"
        "ExitDeadline(30).arm(3, 'the test')\n"
        "raise SystemExit(0)  # the timer thread is a daemon: it does not hold the exit\n",
        timeout=20,
    )
    assert code == 0


def test_the_data_directory_is_made_private_and_tightened(tmp_path):
    fresh = tmp_path / "a" / "state"
    prepare_data_dir(fresh)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    os.chmod(earlier, 0o755)
    prepare_data_dir(earlier)
    assert stat.S_IMODE(os.stat(earlier).st_mode) == 0o700


class Parent(Service):
    """Stands in for the worker: the root of the service tree."""


class Failed(Service):
    """Stands in for an agent's actor that raised."""


def supervise(
    reason: BaseException, strategy: type[OneForOneSupervisor] = AgentSupervisor
) -> tuple[Parent, OneForOneSupervisor, Failed]:
    async def scenario() -> tuple[Parent, OneForOneSupervisor, Failed]:
        parent = Parent()
        supervisor = strategy(beacon=parent.beacon)
        failed = Failed()
        failed.crash_reason = reason
        await supervisor.restart_service(failed)
        return parent, supervisor, failed

    return asyncio.run(asyncio.wait_for(scenario(), 10))


def test_an_agent_that_raised_crashes_the_tree_instead_of_restarting():
    error = ValueError("a committer failed")
    parent, supervisor, failed = supervise(error)
    assert parent.crashed and parent.crash_reason is error
    assert supervisor.crashed
    assert failed.restart_count == 0


def test_faust_default_supervisor_restarts_an_agent_that_raised():
    # The upstream behaviour AgentSupervisor replaces (faust's agent_supervisor default).
    parent, supervisor, failed = supervise(ValueError("a committer failed"), OneForOneSupervisor)
    assert not parent.crashed and not supervisor.crashed
    assert failed.restart_count == 1


def test_an_agent_cancelled_by_a_rebalance_is_restarted():
    parent, supervisor, failed = supervise(asyncio.CancelledError())
    assert not parent.crashed and not supervisor.crashed
    assert failed.restart_count == 1


def test_readiness_names_every_failing_condition():
    assert Readiness(True, True, True, True, member_partitions=3).answer() == (
        200,
        {"status": "ready", "failing": [], "member_partitions": 3},
    )
    assert Readiness(True, False, True, True).answer() == (
        503,
        {"status": "not_ready", "failing": ["partitions_assigned"], "member_partitions": 0},
    )
    status, body = Readiness(False, False, False, False).answer()
    assert status == 503
    assert body["failing"] == [
        "running",
        "partitions_assigned",
        "tables_recovered",
        "catalog_ready",
    ]


def test_deadletter_retention_in_milliseconds():
    assert deadletter_retention_ms(Settings()) == 7 * 24 * 3600 * 1000
    assert deadletter_retention_ms(Settings(deadletter_retention_days=0.5)) == 12 * 3600 * 1000


def test_deadletter_segments_roll_daily_or_sooner():
    day_ms = 24 * 3600 * 1000
    assert deadletter_configs(Settings()) == {
        "retention.ms": str(7 * day_ms),
        "segment.ms": str(day_ms),
    }
    assert deadletter_configs(Settings(deadletter_retention_days=0.25))["segment.ms"] == str(
        day_ms // 4
    )


def test_the_openapi_document_describes_the_health_pages():
    schemas = OPENAPI_DOCUMENT["components"]["schemas"]
    failing = schemas["Readiness"]["properties"]["failing"]["items"]["enum"]
    assert failing == Readiness(False, False, False, False).failing
    paths = OPENAPI_DOCUMENT["paths"]
    assert set(paths["/health/ready"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/health/live"]["get"]["responses"]) == {"200", "503"}
