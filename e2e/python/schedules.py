"""Stores schedules as a Python Taskiq app does, with ListRedisScheduleSource, then exits:
kiq's scheduler serves them. Argument: the one-shot time (ISO 8601, UTC).
Configured by the environment, as kiq_interop.py, and KIQ_TEST_PLAIN_URL: a plain redis:// URL
of the primary (ListRedisScheduleSource takes one server; it cannot write to a cluster).
"""

import asyncio
import os
import sys
from datetime import datetime, timedelta

from taskiq import ScheduledTask
from taskiq_redis import ListRedisScheduleSource

from kiq_interop import URL


async def main() -> None:
    at = datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00"))
    source = ListRedisScheduleSource(os.environ.get("KIQ_TEST_PLAIN_URL") or URL)
    await source.startup()
    await source.add_schedule(ScheduledTask(
        task_name="interop.add", labels={"retry_on_error": False, "origin": "python"},
        args=[3, 4], kwargs={}, schedule_id="every-second", interval=1))
    await source.add_schedule(ScheduledTask(
        task_name="interop.add", labels={}, args=[], kwargs={"a": 1, "b": 1},
        schedule_id="every-2s-timedelta", interval=timedelta(seconds=2)))
    await source.add_schedule(ScheduledTask(
        task_name="interop.greet", labels={}, args=["once"], kwargs={"punctuation": "."},
        schedule_id="one-shot", time=at))
    await source.add_schedule(ScheduledTask(
        task_name="interop.add", labels={}, args=[1, 2], kwargs={},
        schedule_id="nightly-berlin", cron="0 2 * * *", cron_offset="Europe/Berlin"))
    await source.shutdown()


asyncio.run(main())
