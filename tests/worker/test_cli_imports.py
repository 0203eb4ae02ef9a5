"""The CLI starts without importing what only its commands need, and its static command table is true.

``worker.cli.main`` lists each command's name, modules and help in ``COMMANDS`` so that ``--help``
and argument parsing import nothing heavy; these tests hold that table equal to the real commands.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from worker.cli import main as cli_main

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
            " and m not in ('worker.cli.main', 'worker.cli.output', 'storage.errors')), file=sys.stderr)")
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
