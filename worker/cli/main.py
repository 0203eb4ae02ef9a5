"""Entry point: reads settings once, configures logging, runs a command, maps errors to exit codes.

Starting is fast: a command's module (and what it imports: SQLAlchemy, Dramatiq, WeasyPrint...) is
imported only when that command runs. ``COMMANDS`` names each command, the modules that register it
and the first paragraph of its help, which ``--help`` lists without importing anything;
tests/worker/test_cli_imports.py holds the table equal to the real commands.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from gettext import gettext as _
from typing import NamedTuple

import click
import pydantic

from storage.errors import Conflict, NotFound, ValidationFailed
from worker.cli.output import EXIT_CONFLICT, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_FOUND, fail
from worker.cli.startup import importing, running, skip_final_collections


class Entry(NamedTuple):
    """Where a command comes from: ``modules`` are imported in order, and each one's ``COMMANDS``
    registered (the first one's holds the command; the others add sub-commands to it); ``help``
    is the first paragraph of its help, as ``--help`` lists it."""

    modules: tuple[str, ...]
    help: str


_CAMPAIGNS = ("worker.cli.campaigns_cmd", "worker.cli.actions_cmd", "worker.cli.files_cmd")
_SERVICE = ("worker.cli.service_cmd",)
COMMANDS: dict[str, Entry] = {
    "api": Entry(("worker.cli.api_cmd",),
                 "Serve the HTTP API until SIGTERM; it hands work to the workers through the broker."),
    "campaigns": Entry(_CAMPAIGNS, "Create, change, inspect and send campaigns."),
    "db": Entry(("worker.cli.db_cmd",), "Database schema management."),
    "demo": Entry(_SERVICE, "Load sample data, run a campaign end to end on the embedded default, "
                            "print where everything went."),
    "files": Entry(("worker.cli.files_cmd",), "Stored files (exports, letter archives, previews)."),
    "health": Entry(_SERVICE, "Check the database (and its schema), the broker, SMTP and storage; one line each; "
                              "exit 1 when one fails."),
    "load": Entry(("worker.cli.load_cmd",),
                  "Upsert a bundle (.json: settings, teams, users, templates, relations_paths, contacts) or "
                  "contacts as JSON Lines (.jsonl, one contact a line, streamed). Idempotent."),
    "run": Entry(_SERVICE, "Scheduler, worker and HTTP API in one process, for one machine "
                           "(the in-process broker works here)."),
    "scheduler": Entry(_SERVICE, "Scan for due campaigns, reconcile and finalise every SCHEDULER_INTERVAL seconds."),
    "settings": Entry(("worker.cli.settings_cmd",), "Campaign settings: sending domain and consent."),
    "status": Entry(_SERVICE, "Queue depths, workers alive, and campaigns in flight with progress, rate, "
                              "ETA and errors."),
    "tokens": Entry(("worker.cli.tokens_cmd",), "Bearer tokens of the HTTP API."),
    "worker": Entry(_SERVICE, "Consume the queues (Dramatiq) until SIGTERM."),
}


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands by name (``Group.commands``): every name in ``entries`` is there from the
    start, and looking one up imports the modules that register it. Names and ``in`` import nothing."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self._entries = dict(entries)
        self._loaded: dict[str, click.Command] = {}

    def _load(self, name: str) -> None:
        with importing():
            modules = [importlib.import_module(module) for module in self._entries[name].modules]
        for module in modules:
            for command in module.COMMANDS:
                self._loaded.setdefault(command.name, command)

    def loaded(self, name: str) -> click.Command | None:
        """The command if its module is imported already (nothing is imported)."""
        return self._loaded.get(name)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded and name in self._entries:
            self._load(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._loaded.pop(name, None)
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter([*self._entries, *(name for name in self._loaded if name not in self._entries)])

    def __len__(self) -> int:
        return len(self._entries.keys() | self._loaded.keys())


class LazyGroup(click.Group):
    """A group whose commands (``LazyCommands``) are imported when one is run; its ``--help`` lists
    the commands not imported yet from their ``Entry``'s help."""

    commands: LazyCommands

    def __init__(self, *args, entries: dict[str, Entry], **kwargs) -> None:
        super().__init__(*args, commands=LazyCommands(entries), **kwargs)
        self.entries = entries

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own, but a command not imported yet is listed with its Entry's help (not imported).
        listed = []
        for name in self.list_commands(ctx):
            command = self.commands.loaded(name)
            if command is None and name in self.entries:
                command = click.Command(name, help=self.entries[name].help)
            if command is not None and not command.hidden:
                listed.append((name, command))
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _command in listed)
            with formatter.section(_("Commands")):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in listed])


@click.group(cls=LazyGroup, entries=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Campaign dispatch worker: schedules, fans out and delivers campaigns exactly once."""
    with importing():
        from worker.pipeline.app import App
        from worker.runtime.logging import configure_logging
        from worker.runtime.settings import Settings

        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
        app = App(settings)
    ctx.obj = app
    ctx.call_on_close(app.close)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the contract's exit codes and no traceback for bad input."""
    skip_final_collections()
    try:
        with running():
            cli.main(args=argv, prog_name="campaign-dispatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except click.UsageError as exc:
        name = getattr(getattr(exc, "param", None), "name", None) or "arguments"
        fail(EXIT_INVALID, exc.format_message(), {name: [exc.format_message()]})
    except ValidationFailed as exc:
        fail(EXIT_INVALID, exc.message, exc.errors)
    except pydantic.ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]).upper() or "environment"
            errors.setdefault(key, []).append(err["msg"].removeprefix("Value error, "))
        fail(EXIT_INVALID, "Invalid configuration in the environment.", errors)
    except NotFound as exc:
        fail(EXIT_NOT_FOUND, str(exc))
    except Conflict as exc:
        fail(EXIT_CONFLICT, str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the contract: one line on stderr, exit 1
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


# What a database without our tables answers (SQLite, PostgreSQL): said as what to do, not as SQL.
_NO_SCHEMA = ("no such table", "does not exist")


def _one_line(exc: Exception) -> str:
    """One line saying what went wrong; a database error as its first line (no SQL dump), and a
    missing schema as what to run."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        said = str(exc.orig or exc).strip()
        first = said.splitlines()[0] if said else type(exc).__name__
        if any(marker in first for marker in _NO_SCHEMA) and ("table" in first or "relation" in first):
            return f"the database has no schema ({first}): run `campaign-dispatch db upgrade`"
        return f"database: {first}: check DATABASE_URL, and that the database is running"
    return f"{type(exc).__name__}: {exc}"
