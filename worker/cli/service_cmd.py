"""``worker``, ``scheduler``, ``run`` and ``status``: the long-running roles and a look at them."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import click

from storage.errors import ValidationFailed
from worker.pipeline import queries
from worker.pipeline.app import App
from worker.pipeline.roles import running_worker, scheduler_for, supervise_workers
from worker.runtime.broker import is_memory
from worker.runtime.supervise import wait_for_signal


def _needs_real_broker(app: App, command: str) -> None:
    if is_memory(app.settings.broker_url):
        raise ValidationFailed({"BROKER_URL": [f"memory:// works only within one process (run, demo); "
                                              f"`{command}` needs redis://host:port/db"]})


@click.command("worker")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
@click.pass_obj
def worker_cmd(app: App, processes: int, threads: int) -> None:
    """Consume the queues (Dramatiq) until SIGTERM."""
    _needs_real_broker(app, "worker")
    if processes > 1:
        supervise_workers(processes, threads)  # each child is an entry point: it reads its own settings
        return
    with running_worker(app, threads):
        wait_for_signal()


@click.command("scheduler")
@click.pass_obj
def scheduler_cmd(app: App) -> None:
    """Scan for due campaigns, reconcile and finalise every SCHEDULER_INTERVAL seconds."""
    _needs_real_broker(app, "scheduler")
    scheduler = scheduler_for(app, blocking=True)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


@click.command("run")
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--api-port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port of the HTTP API served beside the worker (0: any free port).")
@click.option("--api-host", default="127.0.0.1", show_default=True)
@click.option("--no-api", is_flag=True, help="Do not serve the HTTP API.")
@click.pass_obj
def run_cmd(app: App, threads: int, api_port: int, api_host: str, no_api: bool) -> None:
    """Scheduler, worker and HTTP API in one process, for one machine (the in-process broker works here)."""
    from worker.channels.mailcatcher import MailCatcher

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
@click.pass_obj
def status_cmd(app: App, as_json: bool) -> None:
    """Queue depths (ready, delayed, dead) and campaigns in flight with progress."""
    report = queries.status(app)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    queues = Table(title="queues")
    for column in ("queue", "ready", "delayed", "dead"):
        queues.add_column(column)
    for q in report["queues"]:
        queues.add_row(q["queue"], *(str(q[k]) for k in ("ready", "delayed", "dead")))
    console.print(queues)
    campaigns = Table(title="campaigns in flight")
    for column in ("id", "name", "type", "status", "total", "sent", "failed", "skipped", "pending"):
        campaigns.add_column(column)
    for c in report["campaigns"]:
        p = c["progress"]
        campaigns.add_row(c["id"], c["name"], c["type"], c["status"],
                          *(str(p[k]) for k in ("total", "sent", "failed", "skipped", "pending")))
    console.print(campaigns)


@click.command("demo")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the campaign.")
@click.pass_obj
def demo_cmd(app: App, timeout: float) -> None:
    """Load sample data, run a campaign end to end on the embedded default, print where everything went."""
    from worker.cli.demo import run_demo

    if not is_memory(app.settings.broker_url):
        raise ValidationFailed({"BROKER_URL": ["the demo runs on the in-process broker: unset BROKER_URL"]})
    click.echo(json.dumps(run_demo(app, timeout=timeout), indent=2, ensure_ascii=False))


COMMANDS = [worker_cmd, scheduler_cmd, run_cmd, status_cmd, demo_cmd]
