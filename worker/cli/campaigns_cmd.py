"""``campaigns …``: the seed's campaign endpoints as commands printing the seed's JSON shapes.

Only ``worker.pipeline.queries`` (the read side) is imported with this module: the write side
(``worker.pipeline.commands``: templates, the lifecycle, the dispatcher) is imported by the command
that runs it, so ``campaigns show`` starts without it (tests/worker/test_cli_imports.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from worker.pipeline import queries
from worker.pipeline.app import App
from worker.cli.output import emit, read_json_file

PAGE = click.option("--page", type=click.IntRange(1, queries.MAX_PAGE), default=1, show_default=True)
PER_PAGE = click.option("--per-page", "per_page", type=click.IntRange(1, queries.MAX_PER_PAGE), default=15,
                        show_default=True)


@click.group("campaigns")
def campaigns_group() -> None:
    """Create, change, inspect and send campaigns."""


def _service(target: str) -> Callable[[App, str], dict]:
    """The function ``target`` (``"module:function"``), imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def campaign_command(name: str, action: str, help_text: str) -> click.Command:
    """``campaigns NAME ID``: print what ``action(app, ID)`` returns. ``action`` is named
    (``"worker.pipeline.commands:send_campaign"``) and imported when the command runs: a command
    imports only its own service module."""
    @campaigns_group.command(name, help=help_text)
    @click.argument("campaign_id")
    @click.pass_obj
    def command(app: App, campaign_id: str) -> None:
        emit(_service(action)(app, campaign_id))

    return command


@campaigns_group.command("create")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--user", "user_id", type=int, required=True, help="Id of the user creating the campaign.")
@click.pass_obj
def create(app: App, file: str, user_id: int) -> None:
    """POST /campaigns from the JSON payload in FILE (with execute_now, dispatched at once)."""
    from worker.pipeline import commands  # lazy: the write side (see the module's docstring)

    emit(commands.create_campaign(app, read_json_file(file), user_id))


@campaigns_group.command("update")
@click.argument("campaign_id")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def update(app: App, campaign_id: str, file: str) -> None:
    """PUT /campaigns/:id from the JSON payload in FILE (refused once sent)."""
    from worker.pipeline import commands  # lazy: the write side (see the module's docstring)

    emit(commands.update_campaign(app, campaign_id, read_json_file(file)))


campaign_command("show", "worker.pipeline.queries:show_campaign", "GET /campaigns/:id with status and progress.")


@campaigns_group.command("list")
@click.option("--status", type=click.Choice(queries.STATUSES))
@click.option("--type", "ctype", type=click.Choice(queries.TYPES))
@click.option("--teams", help="Comma-separated team ids.")
@click.option("--search")
@PAGE
@PER_PAGE
@click.pass_obj
def list_(app: App, status, ctype, teams, search, page, per_page) -> None:
    """GET /campaigns."""
    emit(queries.list_campaigns(app, status=status, type=ctype, teams=teams, search=search, page=page,
                                per_page=per_page))


campaign_command("copy", "worker.pipeline.commands:copy_campaign", "POST /campaigns/:id/copy.")


@campaigns_group.command("delete")
@click.argument("campaign_id")
@click.pass_obj
def delete(app: App, campaign_id: str) -> None:
    """DELETE /campaigns/:id (refused once sent)."""
    from worker.pipeline import commands  # lazy: the write side (see the module's docstring)

    commands.delete_campaign(app, campaign_id)
    emit({})


@campaigns_group.command("recipients")
@click.argument("campaign_id")
@click.option("--search")
@PAGE
@PER_PAGE
@click.pass_obj
def recipients(app: App, campaign_id: str, search, page, per_page) -> None:
    """GET /campaigns/:id/recipients, each with its delivery state."""
    emit(queries.recipients(app, campaign_id, search=search, page=page, per_page=per_page))


COMMANDS = [campaigns_group]
