"""``load FILE``: upsert a bundle (``.json``) or contacts as JSON Lines (``.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from sqlalchemy import inspect

from storage.errors import ValidationFailed
from storage.loader import load_bundle, load_jsonl
from worker.pipeline.app import App
from worker.cli.output import EXIT_ERROR, emit, fail


@click.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Contacts per transaction when streaming JSON Lines.")
@click.pass_obj
def load(app: App, file: Path, batch_size: int) -> None:
    """Upsert a bundle (.json: settings, teams, users, templates, relations_paths, contacts)
    or contacts as JSON Lines (.jsonl, one contact a line, streamed). Idempotent."""
    suffix = file.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise ValidationFailed({"file": [f"must end in .json (a bundle) or .jsonl (contacts, one a line): {file}"]})
    if not inspect(app.engine).has_table("contacts"):
        fail(EXIT_ERROR, "The database has no schema yet: run `campaign-dispatch db upgrade` first.")
    if suffix == ".jsonl":
        emit(load_jsonl(app.sessions, file, batch_size=batch_size))
    else:
        emit(load_bundle(app.sessions, _read_bundle(file)))


def _read_bundle(file: Path) -> object:
    try:
        with file.open("rb") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ValidationFailed({"file": [f"cannot read {file}: {exc.strerror or exc}"]}) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValidationFailed({"file": [f"not valid JSON: {exc}"]}) from None


COMMANDS = [load]
