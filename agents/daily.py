"""The daily jobs (birthdays, expiry, tier review) start by themselves once a day."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import faust

from streams.program import Program
from streams.settings import Settings
from streams.topics import Topics, daily_commands

DAILY_CRON = "5 0 * * *"
"""00:05 in the program's time zone: every member's day has begun."""


def register(app: faust.App, settings: Settings, program: Program, topics: Topics) -> None:
    zone = ZoneInfo(program.timezone)

    @app.crontab(DAILY_CRON, timezone=zone, on_leader=True)
    async def start_daily_jobs() -> None:
        # Wall clock at the edge: the command carries the date, the job is event driven.
        today = datetime.now(zone).date()
        for partition, key, value in daily_commands(today, settings.partitions):
            await topics.daily.send(key=key, value=value, partition=partition)
