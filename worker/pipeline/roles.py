"""Long-running roles: worker processes, the scheduler, and both in one process (``run``)."""

from __future__ import annotations

import gc
import multiprocessing
import signal
import threading
import time
from contextlib import contextmanager
from collections.abc import Iterator

import dramatiq
import structlog

from scheduler.jobs import Enqueue
from scheduler.service import build_scheduler, run_once
from worker.pipeline.actors import Actors, declare_actors
from worker.pipeline.app import App
from worker.pipeline.finishing import hook_for
from worker.runtime.broker import make_broker
from worker.runtime.logging import configure_logging
from worker.runtime.settings import Settings

log = structlog.get_logger()


def enqueue_for(actors: Actors) -> Enqueue:
    """The scheduler's view of the actors."""
    return Enqueue(dispatch=actors.enqueue_dispatch, batches=actors.enqueue_batches)


def scheduler_for(app: App, actors: Actors, *, blocking: bool, interval: float | None = None):
    """The APScheduler instance for this app (every job on one interval)."""
    s = app.settings
    return build_scheduler(app.sessions, enqueue_for(actors), interval=interval or s.scheduler_interval,
                           lease=s.lease_seconds, stall=s.stall_seconds, batch_size=s.delivery_batch_size,
                           blocking=blocking, before_complete=finishing_hook(app, actors))


def tick(app: App, actors: Actors) -> None:
    """One pass of the scheduler's jobs, as each interval runs them (demo and tests drive this)."""
    s = app.settings
    run_once(app.sessions, enqueue_for(actors), lease=s.lease_seconds, stall=s.stall_seconds,
             batch_size=s.delivery_batch_size, before_complete=finishing_hook(app, actors))


def finishing_hook(app: App, actors: Actors):
    """Finalise's hook for this app: deal tasks, ask for a letter campaign's ZIP (again after a lease)."""
    return hook_for(app, actors.enqueue_archive)


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(1.0)


# Laying out letters allocates millions of short-lived objects: with CPython's default thresholds
# (700, 10, 10) the collector took ~10% of the CPU of rendering them; with these ~4%. Garbage cycles
# then wait longer, so the letter channel collects after each batch (worker/channels/letters.py): one process
# rendering 350 letters peaked at 145 MiB, against 121 with the defaults and 262 without that collect.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect less often, and never scan what start-up built (modules, settings, engines)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# How long an idle queue's consumer waits before asking Redis again (ms). Each ask costs CPU and
# takes the GIL from a thread laying out letters: at 100 ms an idle worker process used 850 ms of
# CPU a 20 s, at 1,000 (Dramatiq's default) 120 ms. A message on an idle queue waits up to this.
IDLE_POLL_MS = 1000


@contextmanager
def running_worker(app: App, broker: dramatiq.Broker, threads: int,
                   idle_poll_ms: int = IDLE_POLL_MS) -> Iterator[Actors]:
    """Declare the actors and consume their queues with ``threads`` threads until the block ends."""
    actors = declare_actors(broker, app)
    tune_gc()
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=idle_poll_ms)
    worker.start()
    log.info("worker.started", threads=threads, queues=sorted(broker.get_declared_queues()))
    try:
        yield actors
    finally:
        worker.stop()
        log.info("worker.stopped")


def worker_process(threads: int) -> None:
    """One worker process: its own settings, logging, connections and broker (entry point of a child)."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    app = App(settings)
    broker = make_broker(settings.broker_url)
    try:
        with running_worker(app, broker, threads):
            wait_for_signal()
    finally:
        app.close()
        broker.close()


def supervise(processes: int, threads: int) -> None:
    """Run ``processes`` worker processes, restart any that dies, stop them all on SIGTERM/SIGINT."""
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def start():
        proc = ctx.Process(target=worker_process, args=(threads,), daemon=False)
        proc.start()
        return proc

    procs = [start() for _ in range(processes)]
    log.info("worker.supervising", processes=processes, pids=[p.pid for p in procs])
    while not stop.is_set():
        for i, proc in enumerate(procs):
            if not proc.is_alive():
                log.warning("worker.process_died", pid=proc.pid, exitcode=proc.exitcode)
                procs[i] = start()
        stop.wait(1.0)
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + 30
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
