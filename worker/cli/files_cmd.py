"""``campaigns letters|tasks|export|export-status`` and ``files url``: what a campaign produced."""

from __future__ import annotations

import click

from worker.pipeline import queries
from worker.pipeline.app import App
from worker.cli.campaigns_cmd import campaign_command, campaigns_group
from worker.cli.output import emit

campaign_command("letters", "worker.pipeline.queries:letters_url",
                 "A fresh URL to the ZIP of a letter campaign's PDFs, valid for 300 s.")
campaign_command("tasks", "worker.pipeline.queries:tasks", "The telephone / follow-up tasks the campaign created.")
campaign_command("export", "worker.pipeline.commands:start_export",
                 "Queue an XLSX export of the recipients (with memory:// it runs in the command).")


@campaigns_group.command("export-status")
@click.argument("campaign_id")
@click.argument("export_id")
@click.pass_obj
def export_status(app: App, campaign_id: str, export_id: str) -> None:
    """pending, failed (with the reason) or done with a file_id."""
    emit(queries.export_status(app, campaign_id, export_id))


@click.group("files")
def files_group() -> None:
    """Stored files (exports, letter archives, previews)."""


@files_group.command("url")
@click.argument("file_id")
@click.pass_obj
def file_url(app: App, file_id: str) -> None:
    """A presigned download URL of a stored file, valid for 300 s."""
    emit({"url": queries.file_url(app, file_id)["url"]})


COMMANDS = [files_group]
