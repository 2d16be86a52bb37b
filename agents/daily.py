"""The daily jobs (birthdays, expiry, tier review) start by themselves once a day."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import faust

from loyalty.core.program import Program
from loyalty.streams.settings import Settings
from loyalty.streams.topics import Topics, daily_commands


def register(app: faust.App, settings: Settings, program: Program, topics: Topics) -> None:
    """Start the daily jobs at ``settings.daily_cron`` (default 00:05, when every member's day
    has begun) in the program's time zone; no crontab when it is empty."""
    if not settings.daily_cron:
        return
    zone = ZoneInfo(program.timezone)

    @app.crontab(settings.daily_cron, timezone=zone, on_leader=True)
    async def start_daily_jobs() -> None:
        # Wall clock at the edge: the command carries the date, the job is event driven.
        today = datetime.now(zone).date()
        for partition, key, value in daily_commands(today, settings.partitions):
            await topics.daily.send(key=key, value=value, partition=partition)
