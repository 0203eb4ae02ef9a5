"""Long-running roles: worker processes, the scheduler, and both in one process (``run``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
import structlog
from apscheduler.schedulers.base import BaseScheduler

from scheduler.service import build_scheduler, run_once
from worker.pipeline.actors import Actors
from worker.pipeline.app import App
from worker.pipeline.presence import announce
from worker.runtime.logging import configure_logging
from worker.runtime.settings import Settings
from worker.runtime.supervise import supervise, tune_gc, wait_for_signal

log = structlog.get_logger()


def scheduler_for(app: App, *, blocking: bool, interval: float | None = None) -> BaseScheduler:
    """The APScheduler instance for this app (every job on one interval), enqueueing on its broker."""
    s = app.settings
    return build_scheduler(app.sessions, app.actors.enqueue(), interval=interval or s.scheduler_interval,
                           lease=s.lease_seconds, stall=s.stall_seconds, batch_size=s.delivery_batch_size,
                           blocking=blocking)


def tick(app: App) -> None:
    """One pass of the scheduler's jobs, as each interval runs them (demo and tests drive this)."""
    s = app.settings
    run_once(app.sessions, app.actors.enqueue(), lease=s.lease_seconds, stall=s.stall_seconds,
             batch_size=s.delivery_batch_size)


# How long an idle queue's consumer waits before asking Redis again (ms). Each ask costs CPU and
# takes the GIL from a thread laying out letters: at 100 ms an idle worker process used 850 ms of
# CPU a 20 s, at 1,000 (Dramatiq's default) 120 ms. A message on an idle queue waits up to this.
IDLE_POLL_MS = 1000


@contextmanager
def running_worker(app: App, threads: int, idle_poll_ms: int = IDLE_POLL_MS) -> Iterator[Actors]:
    """Consume the app's broker with ``threads`` threads until the block ends."""
    from renderers import pdf_hooks  # imports WeasyPrint: only roles that render letters pay for it

    hooks = pdf_hooks.install(app.settings.weasyprint_hooks)
    actors = app.actors
    tune_gc()
    worker = dramatiq.Worker(app.broker, worker_threads=threads, worker_timeout=idle_poll_ms)
    worker.start()
    app.consuming = True
    presence = announce(app.settings.broker_url, threads)
    log.info("worker.started", threads=threads, queues=sorted(app.broker.get_declared_queues()),
             weasyprint_hooks=hooks)
    try:
        yield actors
    finally:
        app.consuming = False
        worker.stop()
        if presence is not None:
            presence.close()
        log.info("worker.stopped")


def worker_process(threads: int) -> None:
    """One worker process: its own settings, logging, connections and broker (entry point of a child)."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    app = App(settings)
    try:
        with running_worker(app, threads):
            wait_for_signal()
    finally:
        app.close()


def supervise_workers(processes: int, threads: int) -> None:
    """``processes`` worker processes, restarted when one dies, stopped on SIGTERM/SIGINT."""
    supervise(worker_process, (threads,), processes)
