"""``api``: serve the HTTP API (the seed's endpoints) with uvicorn."""

from __future__ import annotations

import click

from storage.errors import ValidationFailed
from worker.pipeline.app import App
from worker.runtime.broker import is_memory


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="uvicorn worker processes (each reads the environment itself).")
@click.pass_obj
def api_cmd(app: App, host: str, port: int, workers: int) -> None:
    """Serve the HTTP API until SIGTERM; it hands work to the workers through the broker."""
    if is_memory(app.settings.broker_url):
        raise ValidationFailed({"BROKER_URL": ["memory:// works only within one process: `api` needs "
                                              "redis://host:port/db (or use `run`, which serves the API too)"]})
    from worker.api.server import serve
    from worker.cli.service_cmd import require

    require(app, ("database", "broker"))  # the schema too: every endpoint reads it
    click.echo(f"serving the API on http://{host}:{port} ({workers} worker process(es))", err=True)
    serve(app, host, port, workers)


COMMANDS = [api_cmd]
