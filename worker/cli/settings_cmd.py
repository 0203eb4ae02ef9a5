"""``settings show`` / ``settings set FILE``: GET / PUT /campaigns/settings."""

from __future__ import annotations

import click

from worker.pipeline import commands, queries
from worker.pipeline.app import App
from worker.cli.output import emit, read_json_file


@click.group("settings")
def settings_group() -> None:
    """Campaign settings: sending domain and consent."""


@settings_group.command("show")
@click.pass_obj
def settings_show(app: App) -> None:
    """Print the settings object."""
    emit(queries.show_settings(app))


@settings_group.command("set")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def settings_set(app: App, file: str) -> None:
    """Store the settings in FILE (JSON) and print them."""
    emit(commands.update_settings(app, read_json_file(file)))


COMMANDS = [settings_group]
