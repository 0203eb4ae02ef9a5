"""``worker``, ``scheduler``, ``run`` and ``status``: the long-running roles and a look at them."""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import click

from storage.errors import ValidationFailed
from worker.cli.output import EXIT_ERROR
from worker.pipeline.app import App
from worker.runtime.broker import is_memory


def _needs_real_broker(app: App, command: str) -> None:
    if is_memory(app.settings.broker_url):
        raise ValidationFailed({"BROKER_URL": [f"memory:// works only within one process (run, demo); "
                                              f"`{command}` needs redis://host:port/db"]})


def require(app: App, which: tuple[str, ...]) -> None:
    """Before a long-running role starts: every dependency it needs answers, else one line each on
    stderr saying what to do, and exit 1 (instead of starting and failing campaign by campaign)."""
    from worker.pipeline.health import check, healthy

    results = check(app, which)
    if healthy(results):
        return
    for name, result in results.items():
        if result != "ok" and not result.startswith("not configured"):
            click.echo(f"error: {name}: {result}", err=True)
    sys.exit(EXIT_ERROR)


def _serve_metrics(app: App, checks: tuple[str, ...], *, supervising: bool = False) -> None:
    """METRICS_PORT (0: off): GET /metrics and GET /healthz of this process (of every worker process
    when supervising); a scheduler on the same machine as a worker takes the next port."""
    if not app.settings.metrics_port:
        return
    from worker.pipeline.health import check, healthy
    from worker.pipeline.status import queue_depths
    from worker.runtime import metrics

    def health() -> tuple[bool, list[str]]:
        results = check(app, checks)
        return healthy(results), [f"{name}: {result}" for name, result in results.items()]

    if supervising:
        metrics.prepare_multiprocess()  # before the worker processes start: they inherit the folder
    state = metrics.StateCollector.for_service(app.engine, app.settings.broker_url, queue_depths)
    served = metrics.start_metrics_server(app.settings.metrics_port, health=health,
                                          registry_factory=metrics.registry_factory_for(state))
    click.echo(f"serving metrics on http://0.0.0.0:{served.port}/metrics", err=True)


@click.command("worker")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=4, show_default=True)
@click.pass_obj
def worker_cmd(app: App, processes: int, threads: int) -> None:
    """Consume the queues (Dramatiq) until SIGTERM."""
    from worker.pipeline.roles import running_worker, supervise_workers
    from worker.runtime.supervise import wait_for_signal

    _needs_real_broker(app, "worker")
    require(app, ("database", "broker", "smtp", "storage"))
    _serve_metrics(app, ("database", "broker"), supervising=processes > 1)
    if processes > 1:
        supervise_workers(processes, threads)  # each child is an entry point: it reads its own settings
        return
    with running_worker(app, threads):
        wait_for_signal()


@click.command("scheduler")
@click.pass_obj
def scheduler_cmd(app: App) -> None:
    """Scan for due campaigns, reconcile and finalise every SCHEDULER_INTERVAL seconds."""
    from worker.pipeline.roles import scheduler_for

    _needs_real_broker(app, "scheduler")
    require(app, ("database", "broker"))
    _serve_metrics(app, ("database", "broker"))
    scheduler = scheduler_for(app, blocking=True)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


@click.command("run")
@click.option("--threads", type=click.IntRange(1, 256), default=4, show_default=True)
@click.option("--api-port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port of the HTTP API served beside the worker (0: any free port).")
@click.option("--api-host", default="127.0.0.1", show_default=True)
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
@click.pass_obj
def run_cmd(app: App, threads: int, api_port: int, api_host: str, no_api: bool) -> None:
    """Scheduler, worker and HTTP API in one process, for one machine (the in-process broker works here)."""
    from worker.channels.mailcatcher import MailCatcher
    from worker.pipeline.roles import running_worker, scheduler_for
    from worker.runtime.supervise import wait_for_signal

    with ExitStack() as stack:
        api = None
        if not no_api:  # first: a busy port is an error before anything starts
            from worker.api.server import BackgroundServer

            api = BackgroundServer(app, api_host, api_port)
        if not app.settings.smtp_url:
            catcher = MailCatcher(Path("var/mail").resolve())
            app.smtp_url = catcher.start()
            stack.callback(catcher.stop)
            click.echo(f"no SMTP_URL: capturing mail in {catcher.maildir}", err=True)
        require(app, ("database", "broker", "smtp", "storage"))
        _serve_metrics(app, ("database", "broker"))
        stack.enter_context(running_worker(app, threads))
        scheduler = scheduler_for(app, blocking=False)
        scheduler.start()
        stack.callback(scheduler.shutdown)
        if api is not None:
            stack.enter_context(api)
            host, port = api.address
            click.echo(f"serving the API on http://{host}:{port}", err=True)
        wait_for_signal()


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--watch", is_flag=True, help="Redraw live, with progress bars, until interrupted (Ctrl-C).")
@click.option("--every", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
@click.pass_obj
def status_cmd(app: App, as_json: bool, watch: bool, every: float) -> None:
    """Queue depths, workers alive, and campaigns in flight with progress, rate, ETA and errors."""
    from worker.pipeline import queries

    if as_json and not watch:
        click.echo(json.dumps(queries.status(app), indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.live import Live

    from worker.cli.status_view import render

    console = Console()
    if not watch:
        console.print(render(queries.status(app)))
        return
    try:
        with Live(render(queries.status(app)), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(render(queries.status(app)), refresh=True)
    except KeyboardInterrupt:
        pass


@click.command("health")
@click.pass_obj
def health_cmd(app: App) -> None:
    """Check the database (and its schema), the broker, SMTP and storage; one line each; exit 1 when one fails."""
    from worker.pipeline.health import check, healthy

    results = check(app)
    for name, result in results.items():
        click.echo(f"{name}: {result}")
    sys.exit(0 if healthy(results) else EXIT_ERROR)


@click.command("demo")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the campaign.")
@click.pass_obj
def demo_cmd(app: App, timeout: float) -> None:
    """Load sample data, run a campaign end to end on the embedded default, print where everything went."""
    from worker.cli.demo import run_demo

    if not is_memory(app.settings.broker_url):
        raise ValidationFailed({"BROKER_URL": ["the demo runs on the in-process broker: unset BROKER_URL"]})
    click.echo(json.dumps(run_demo(app, timeout=timeout), indent=2, ensure_ascii=False))


COMMANDS = [worker_cmd, scheduler_cmd, run_cmd, status_cmd, health_cmd, demo_cmd]
