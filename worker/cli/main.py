"""Entry point: reads settings once, configures logging, runs a command, maps errors to exit codes."""

from __future__ import annotations

import sys

import click
import pydantic

from storage.errors import Conflict, NotFound, ValidationFailed
from worker.pipeline.app import App
from worker.cli.output import EXIT_CONFLICT, EXIT_ERROR, EXIT_INVALID, EXIT_NOT_FOUND, fail
from worker.runtime.logging import configure_logging
from worker.runtime.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Campaign dispatch worker: schedules, fans out and delivers campaigns exactly once."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    app = App(settings)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    # Imported here so that each command module stays independent of the others.
    from worker.cli import (actions_cmd, api_cmd, campaigns_cmd, db_cmd, files_cmd, load_cmd, service_cmd,
                            settings_cmd, tokens_cmd)

    for module in (db_cmd, load_cmd, settings_cmd, campaigns_cmd, actions_cmd, files_cmd, service_cmd, tokens_cmd,
                   api_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the contract's exit codes and no traceback for bad input."""
    try:
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
            errors.setdefault(key, []).append(err["msg"])
        fail(EXIT_INVALID, "Invalid configuration in the environment.", errors)
    except NotFound as exc:
        fail(EXIT_NOT_FOUND, str(exc))
    except Conflict as exc:
        fail(EXIT_CONFLICT, str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the contract: one line on stderr, exit 1
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
