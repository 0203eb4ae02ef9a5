"""The CLI starts without importing what only its commands need, and its static command table is true.

``worker.cli.main`` lists each command's name, modules and help in ``COMMANDS`` so that ``--help``
and argument parsing import nothing heavy; these tests hold that table equal to the real commands.
``campaigns show`` imports only the read side: not the write side's templates, lifecycle and
dispatcher, nor structlog (and rich) while nothing logs (benchmarks/cli_startup.py times it).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import click
import pytest

from storage.timefmt import fmt, now
from tests.cli import CliRunner
from worker.cli import main as cli_main
from worker.cli.demo import demo_bundle, email_payload, telephone_payload

ROOT = Path(__file__).resolve().parents[2]
CLI_DIR = ROOT / "worker" / "cli"
# Heavy packages that parsing the command line does not need: the commands import them when they run.
HEAVY = {"weasyprint", "boto3", "botocore", "alembic", "fastapi", "uvicorn", "starlette", "dramatiq", "redis",
         "sqlalchemy", "xlsxwriter", "apscheduler", "aiosmtpd", "aiosmtplib", "jinja2", "pydantic_settings",
         "structlog", "prometheus_client", "rich"}


def _python(code: str, *args: str) -> str:
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _real_commands() -> dict[str, click.Command]:
    """Every command the modules ``worker/cli/*_cmd.py`` register (their ``COMMANDS``), by name."""
    commands: dict[str, click.Command] = {}
    for path in sorted(CLI_DIR.glob("*_cmd.py")):
        module = importlib.import_module(f"worker.cli.{path.stem}")
        for command in module.COMMANDS:
            commands[command.name] = command
    return commands


GROUPS = sorted(name for name, command in _real_commands().items() if isinstance(command, click.Group))


def test_importing_the_cli_imports_no_heavy_package():
    code = (f"import worker.cli.main, sys; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))")
    assert _python(code).strip() == "[]"


def test_help_parses_without_importing_a_command_module():
    code = ("import sys\nfrom worker.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('worker.cli.', 'worker.pipeline', 'storage.'))"
            " and m not in ('worker.cli.main', 'worker.cli.output', 'worker.cli.startup', 'storage.errors')),"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_the_table_names_every_command_with_its_help():
    real = _real_commands()
    assert sorted(cli_main.COMMANDS) == sorted(real)
    for name, command in real.items():
        entry = cli_main.COMMANDS[name]
        assert command in importlib.import_module(entry.modules[0]).COMMANDS, name
        assert not command.hidden and not command.deprecated and command.short_help is None, name
        listed = click.Command(name, help=entry.help)
        for limit in (20, 45, 60, 80, 1000):
            assert listed.get_short_help_str(limit) == command.get_short_help_str(limit), (name, limit)


def test_help_lists_every_command_as_the_commands_themselves_would():
    lazy = _python("from worker.cli.main import main; main()", "--help")
    eager = _python("import worker.cli.main as m\nfor name in list(m.cli.commands):\n    m.cli.commands[name]\n"
                    "m.main()", "--help")
    assert lazy == eager
    listed = lazy.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == sorted(_real_commands())


@pytest.mark.parametrize("group", GROUPS)
def test_a_group_looked_up_alone_has_all_its_sub_commands(group):
    """Each group's entry names every module that adds a sub-command to it (``campaigns``: three)."""
    command = _real_commands()[group]
    code = f"import json, worker.cli.main as m; print(json.dumps(sorted(m.cli.commands[{group!r}].commands)))"
    assert json.loads(_python(code)) == sorted(command.commands)


def test_commands_mapping_imports_a_module_only_when_a_command_is_looked_up():
    code = ("import sys, worker.cli.main as m\n"
            "c = m.cli.commands\n"
            "assert 'tokens' in c and 'nope' not in c and len(c) == len(m.COMMANDS), c\n"
            "assert 'worker.cli.tokens_cmd' not in sys.modules\n"
            "assert c.get('nope') is None and c['tokens'].name == 'tokens'\n"
            "print(sorted(n for n in sys.modules if n.startswith('worker.cli.') and n.endswith('_cmd')))")
    assert _python(code).strip() == "['worker.cli.tokens_cmd']"


# What `campaigns show` does without: packages, and the project's modules of the write side, the
# ledger and the other commands (each was on its path once, ~0.3 s in all).
NOT_FOR_SHOW_PACKAGES = (HEAVY - {"sqlalchemy", "pydantic_settings"}) | {"renderers", "scheduler"}
NOT_FOR_SHOW_MODULES = {
    "storage.lifecycle", "storage.ledger", "storage.filter_sql", "storage.recipients", "storage.contacts",
    "storage.tasks", "storage.objectstore", "storage.progress", "storage.migrate",
    "worker.pipeline.commands", "worker.pipeline.campaign_actions", "worker.pipeline.campaign_service",
    "worker.pipeline.side_jobs", "worker.pipeline.dispatcher", "worker.pipeline.exports",
    "worker.pipeline.status", "worker.pipeline.actors", "worker.channels", "worker.api",
}
# Runs the CLI as the console script does, and prints on stderr, at exit, the modules imported.
_CLI_LISTING_MODULES = ("import atexit, json, sys\n"
                        "atexit.register(lambda: print('MODULES', json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
                        "from worker.cli.main import main\n"
                        "main()")


@pytest.fixture
def stored(monkeypatch, capsys, sqlite_url, tmp_path) -> tuple[CliRunner, dict[str, str], list[str]]:
    """An email and a telephone campaign (its task names users) in a SQLite database: the CLI
    in-process, the environment for a subprocess, and the campaigns' ids."""
    env = {"DATABASE_URL": sqlite_url, "STORAGE_URL": f"file://{tmp_path / 'objects'}", "BROKER_URL": "memory://"}
    cli = CliRunner(monkeypatch, capsys, **env)
    (tmp_path / "bundle.json").write_text(json.dumps(demo_bundle(contacts=4)))
    assert cli("load", str(tmp_path / "bundle.json")).code == 0
    ids = []
    for payload in (email_payload(), telephone_payload()):
        scheduled = {**payload, "execute_now": False, "send_at": fmt(now() + timedelta(hours=1))}  # not sent here
        (tmp_path / "campaign.json").write_text(json.dumps(scheduled))
        created = cli("campaigns", "create", str(tmp_path / "campaign.json"), "--user", "1")
        assert created.code == 0, created.err
        ids.append(created.json["id"])
    return cli, {**os.environ, **env, "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}, ids


def _show_in_a_process(env: dict[str, str], campaign_id: str) -> tuple[dict, list[str]]:
    """``campaigns show ID`` in a fresh process: its JSON and the modules it imported."""
    done = subprocess.run([sys.executable, "-c", _CLI_LISTING_MODULES, "campaigns", "show", campaign_id],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("MODULES ")]
    return json.loads(done.stdout), json.loads(line.removeprefix("MODULES "))


def test_campaigns_show_imports_only_the_read_side(stored):
    cli, env, ids = stored
    for campaign_id in ids:
        shown, modules = _show_in_a_process(env, campaign_id)
        assert shown == cli("campaigns", "show", campaign_id).json  # the same JSON as in-process
        assert shown["id"] == campaign_id and "progress" in shown
        assert "storage.campaigns" in modules and "worker.pipeline.queries" in modules  # it did run
        heavy = [m for m in modules if m.split(".")[0] in NOT_FOR_SHOW_PACKAGES]
        ours = [m for m in modules if any(m == x or m.startswith(f"{x}.") for x in NOT_FOR_SHOW_MODULES)]
        assert heavy == []
        assert ours == []


def test_campaigns_show_of_an_unknown_id_still_says_not_found(stored):
    _cli, env, _ids = stored
    done = subprocess.run([sys.executable, "-c", _CLI_LISTING_MODULES, "campaigns", "show",
                           "00000000-0000-0000-0000-00000000abcd"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3 and "not found" in json.loads(done.stdout)["message"]


def test_structlog_is_configured_when_it_is_imported_after_configure_logging():
    """The CLI configures logging before any module imported structlog: its first import applies
    the configuration, and a library's stdlib record before it is rendered as JSON too."""
    code = ("import logging, sys\n"
            "from worker.runtime.logging import configure_logging\n"
            "configure_logging('json', 'INFO')\n"
            "assert 'structlog' not in sys.modules\n"
            "logging.getLogger('some.library').warning('from %s', 'stdlib')\n"
            "logging.getLogger('some.library').debug('not shown')\n"
            "import structlog\n"
            "structlog.get_logger().info('from structlog', n=1)\n"
            "structlog.get_logger().debug('not shown either')\n"
            "assert type(sys.modules['structlog'].__loader__).__name__ == 'SourceFileLoader'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [("from stdlib", "warning"), ("from structlog", "info")]
    assert lines[1]["n"] == 1 and all("timestamp" in x for x in lines)
