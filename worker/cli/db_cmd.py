"""``db upgrade``: create or migrate the schema."""

from __future__ import annotations

import click

from storage.migrate import upgrade
from worker.pipeline.app import App
from worker.cli.output import emit


@click.group("db")
def db_group() -> None:
    """Database schema management."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@click.pass_obj
def db_upgrade(app: App, revision: str) -> None:
    """Create or migrate the schema (Alembic)."""
    emit({"revision": upgrade(app.engine, revision)})


COMMANDS = [db_group]
