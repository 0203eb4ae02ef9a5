"""APScheduler wiring of the jobs: one interval each, coalesced, never two runs of a job at once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.orm import Session, sessionmaker

from scheduler import jobs
from storage.timefmt import now as utcnow

log = structlog.get_logger()


def run_once(sessions: sessionmaker[Session], enqueue: jobs.Enqueue, *, lease: float, stall: float,
             batch_size: int) -> None:
    """One pass of every job (what each tick does)."""
    now = utcnow()
    jobs.claim_due(sessions, enqueue, now)
    jobs.reconcile(sessions, enqueue, now, lease=timedelta(seconds=lease), stall=timedelta(seconds=stall),
                   batch_size=batch_size)
    jobs.finalise(sessions, enqueue, now, lease=timedelta(seconds=lease))
    jobs.report_progress(sessions, now)


def build_scheduler(sessions: sessionmaker[Session], enqueue: jobs.Enqueue, *, interval: float, lease: float,
                    stall: float, batch_size: int, blocking: bool) -> BaseScheduler:
    """A scheduler running every job each ``interval`` seconds.

    Missed ticks are coalesced into one run: a scheduler that was down for hours catches up with a
    single claim of everything due, and each campaign is claimed once.
    """
    scheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    def tick() -> None:
        try:
            run_once(sessions, enqueue, lease=lease, stall=stall, batch_size=batch_size)
        except Exception:  # noqa: BLE001 - a failed tick is logged; the next one tries again
            log.exception("scheduler.tick_failed")

    scheduler.add_job(tick, "interval", seconds=interval, id="tick", next_run_time=datetime.now(timezone.utc))
    return scheduler

