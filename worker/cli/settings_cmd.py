"""``settings show`` / ``settings set FILE``: GET / PUT /campaigns/settings."""

from __future__ import annotations

import click

from storage.campaign_settings import apply_settings, get_settings, settings_to_seed
from worker.pipeline.app import App
from worker.cli.output import emit, read_json_file


@click.group("settings")
def settings_group() -> None:
    """Campaign settings: sending domain and consent."""


@settings_group.command("show")
@click.pass_obj
def settings_show(app: App) -> None:
    """Print the settings object."""
    with app.sessions() as session:
        emit(settings_to_seed(get_settings(session), app.settings.campaign_domain_suffix))


@settings_group.command("set")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def settings_set(app: App, file: str) -> None:
    """Store the settings in FILE (JSON) and print them."""
    payload = read_json_file(file)
    with app.sessions.begin() as session:
        row = apply_settings(session, payload)
        emit(settings_to_seed(row, app.settings.campaign_domain_suffix))


COMMANDS = [settings_group]
