"""The README and docs/ stand alone and tell the truth.

- No page points outside the repository (a user never sees the team's own notes), every relative
  link resolves to a file of the repository (and a ``#anchor`` to a heading of it), and every
  repository path named in code spans exists.
- Every ``campaign-dispatch`` command line named in the pages is a real command with real options.
- Examples are marked with an HTML comment right before their fenced block:

  ``<!-- example: campaign -->`` a create payload, created through ``campaign_service.create`` (what
  ``campaigns create`` and ``POST /campaigns`` run) against the sample data of tests/data/bundle.json;
  ``<!-- example: filter -->`` a ``filter`` array, parsed by ``storage.filters.parse_filters`` and run
  as SQL on that data; ``<!-- example: settings -->`` and ``<!-- example: bundle -->`` stored with
  the code ``settings set`` and ``load`` use; ``<!-- example: message -->`` a Dramatiq message,
  checked against the declared actors (``tests/worker/test_api_messages.py`` enqueues such messages
  on a real Redis and checks that a worker acts on them);
  ``<!-- example: run -->`` shell run in a fresh directory on the embedded default (SQLite, the
  in-process broker), with ``campaign-dispatch`` on PATH and a copy of tests/data: all of a page's
  run blocks in order, in one shell, which must exit 0;
  ``<!-- example: http -->`` shell run against ``campaign-dispatch run`` serving the HTTP API on the
  embedded default (the page's ``http://127.0.0.1:8000`` pointed at a free port; curl fails on an
  HTTP error). Every endpoint is also tested through HTTP in tests/worker/api/.

Unmarked blocks (production commands, output shown for reading) are not run.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import click
import pytest
from sqlalchemy import func, select

from storage.campaign_settings import apply_settings
from storage.db import make_engine, make_sessionmaker
from storage.errors import ValidationFailed
from storage.filter_sql import compile_filters
from storage.filters import parse_filters
from storage.loader import load_bundle
from storage.migrate import upgrade
from storage.models import Contact

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLE = ROOT / "tests" / "data" / "bundle.json"
KINDS = {"campaign", "filter", "settings", "bundle", "message", "run", "http"}
BIN = Path(sys.executable).parent  # the virtualenv running the tests holds campaign-dispatch

_EXAMPLE = re.compile(r"<!--\s*example:\s*([\w-]+)\s*-->\s*\n```(\w*)\n(.*?)^```", re.S | re.M)
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_REPO_PATH = re.compile(r"(?:worker|storage|renderers|scheduler|tests|benchmarks|deploy|docs)/[\w./-]*")
# What a user of the repository never sees: the team's shared notes and paths of this machine.
_OUTSIDE = [re.compile(p) for p in (r"shared/", r"\.\./", r"/work/", r"\bCONTRACT\b", r"DESIGN\.md",
                                    r"campaigns-api\.txt", r"(?i)\bthe seed\b", r"(?i)\bseed's\b")]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def examples(kind: str) -> list[tuple[Path, int, str]]:
    """(page, line, body) of every block marked ``<!-- example: kind -->``."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in _EXAMPLE.finditer(text):
            if match.group(1) == kind:
                found.append((page, text.count("\n", 0, match.start()) + 1, match.group(3)))
    return found


def _example_params(kind: str) -> list:
    return [pytest.param(body, id=f"{_page_id(page)}:{line}") for page, line, body in examples(kind)]


# --------------------------------------------------------------------------- the pages stand alone


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_page_points_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    hits = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group()!r}"
            for pattern in _OUTSIDE for m in pattern.finditer(text)]
    assert hits == []


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_resolve_inside_the_repository(page):
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_repository_paths_named_exist(page):
    text = page.read_text(encoding="utf-8")
    missing = sorted({m.group() for span in _CODE_SPAN.findall(text)
                      for m in _REPO_PATH.finditer(span)
                      if span.startswith(m.group()) and not (ROOT / m.group().rstrip(".")).exists()})
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_page_has_its_examples_well_formed(page):
    text = page.read_text(encoding="utf-8")
    markers = re.findall(r"<!--\s*example:\s*([\w-]+)\s*-->", text)
    assert set(markers) <= KINDS
    assert len(markers) == len([m for m in _EXAMPLE.finditer(text)]), "a marker not followed by a fenced block"


# --------------------------------------------------------------------------- commands named exist


def _commands() -> click.Group:
    from worker.cli.main import cli

    return cli


def _command_lines(text: str) -> list[str]:
    """The text after each ``campaign-dispatch`` up to the end of its command (a code span's end,
    a comment, a pipe, a closing parenthesis)."""
    lines = []
    for match in re.finditer(r"campaign-dispatch(?![-\w.])([^\n`#|;)]*)", text):
        lines.append(match.group(1))
    return lines


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_commands_and_options_named_exist(page):
    problems = []
    for line in _command_lines(page.read_text(encoding="utf-8")):
        tokens = line.replace("[", " ").replace("]", " ").replace("\\", " ").split()
        command: click.Command = _commands()
        path = ["campaign-dispatch"]
        while tokens and isinstance(command, click.Group) and re.fullmatch(r"[a-z][a-z-]*", tokens[0]):
            name = tokens.pop(0)
            sub = command.commands.get(name)
            if sub is None:
                problems.append(f"{' '.join(path)} has no command {name!r}")
                break
            command, path = sub, [*path, name]
        else:
            options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            options |= {"--help", "-h"}
            for token in tokens:
                option = token.split("=", 1)[0].rstrip(",.:")
                if option.startswith("--") and option not in options:
                    problems.append(f"{' '.join(path)} has no option {option}")
    assert problems == []


# --------------------------------------------------------------------------- payload examples


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory):
    """A migrated SQLite database holding the sample data the examples name."""
    url = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'sample.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    load_bundle(sessions, json.loads(SAMPLE.read_text(encoding="utf-8")))
    yield sessions
    engine.dispose()


def test_there_are_examples_of_each_kind():
    assert {kind: len(examples(kind)) > 0 for kind in KINDS} == dict.fromkeys(KINDS, True)


@pytest.mark.parametrize("body", _example_params("campaign"))
def test_campaign_example_is_accepted(body, sample_db):
    from worker.pipeline import campaign_service

    payload = json.loads(body)
    with sample_db() as session:
        try:
            campaign = campaign_service.create(session, payload, 1)  # what `campaigns create` runs
        except ValidationFailed as exc:
            pytest.fail(f"refused: {exc.errors}")
        assert campaign.type == payload["type"]
        session.rollback()


@pytest.mark.parametrize("body", _example_params("filter"))
def test_filter_example_parses_and_runs(body, sample_db):
    try:
        tree = parse_filters(json.loads(body))
    except ValidationFailed as exc:
        pytest.fail(f"refused: {exc.errors}")
    with sample_db() as session:
        where = compile_filters(tree, session.get_bind().dialect.name)
        session.scalar(select(func.count()).select_from(Contact).where(where))


@pytest.mark.parametrize("body", _example_params("settings"))
def test_settings_example_is_accepted(body, sample_db):
    with sample_db() as session:
        apply_settings(session, json.loads(body))
        session.rollback()


@pytest.mark.parametrize("body", _example_params("bundle"))
def test_bundle_example_loads(body, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bundle.db'}")
    upgrade(engine)
    try:
        counts = load_bundle(make_sessionmaker(engine), json.loads(body))
    finally:
        engine.dispose()
    assert counts["contacts"] > 0


@pytest.mark.parametrize("body", _example_params("message"))
def test_message_example_matches_a_declared_actor(body, sample_db):
    from dramatiq.brokers.stub import StubBroker

    from worker.pipeline.actors import declare_actors
    from worker.pipeline.side_jobs import campaign_from_payload

    message = json.loads(body)
    assert set(message) == {"queue_name", "actor_name", "args", "kwargs", "options", "message_id",
                            "message_timestamp"}
    broker = StubBroker()
    declare_actors(broker, app=None)  # the app is only used when a message runs
    actor = broker.get_actor(message["actor_name"])
    assert actor.queue_name == message["queue_name"]
    inspect.signature(actor.fn).bind(*message["args"], **message["kwargs"])
    uuid.UUID(message["options"]["redis_message_id"])
    uuid.UUID(message["message_id"])
    assert isinstance(message["message_timestamp"], int)
    if "payload" in message["kwargs"]:  # a test email of a payload: valid as the worker checks it
        with sample_db() as session:
            campaign_from_payload(session, message["kwargs"]["payload"], message["kwargs"].get("user_id"))


# --------------------------------------------------------------------------- command examples


def _environment() -> dict[str, str]:
    """This environment without any of the service's variables: the embedded default."""
    from worker.runtime.settings import Settings

    ours = {name.upper() for name in Settings.model_fields} | {"DKIM_KEYS_DIR", "PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", LOG_FORMAT="json", LOG_LEVEL="WARNING")
    return env


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "tests" / "data", work / "tests" / "data")
    return work


def _script(blocks: list[tuple[int, str]]) -> str:
    parts = ["set -euo pipefail"]
    for line, body in blocks:
        parts += [f"echo '>>> example at line {line}' >&2", body]
    return "\n".join(parts) + "\n"


RUN_PAGES = sorted({page for page, _, _ in examples("run")})


@pytest.mark.parametrize("page", RUN_PAGES, ids=_page_id)
def test_run_examples_exit_0(page, tmp_path):
    blocks = [(line, body) for p, line, body in examples("run") if p == page]
    work = _workdir(tmp_path)
    result = subprocess.run(["bash", "-c", _script(blocks)], cwd=work, env=_environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "campaign-dispatch run exited"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("campaign-dispatch run did not answer /healthz")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the HTTP examples use curl, not installed here")
@pytest.mark.parametrize("body", _example_params("http"))
def test_http_examples_against_run(body, tmp_path):
    work, env = _workdir(tmp_path), _environment()
    for args in (["db", "upgrade"], ["load", "tests/data/bundle.json"]):
        subprocess.run(["campaign-dispatch", *args], cwd=work, env=env, check=True, capture_output=True, timeout=120)
    port = _free_port()
    api = f"http://127.0.0.1:{port}"
    log = (tmp_path / "run.log").open("w")
    server = subprocess.Popen(["campaign-dispatch", "run", "--api-port", str(port)], cwd=work, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(api, server)
        script = ("curl() { command curl --fail-with-body \"$@\"; }\n"
                  + _script([(0, body.replace("http://127.0.0.1:8000", api))]))
        result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
