"""Benchmark: wall time of short ``campaign-dispatch`` commands, start of the process to its exit.

Prepares a throwaway SQLite database in a temporary directory through the CLI itself (``db
upgrade``, ``load`` of the demo's sample data with a few contacts, one email campaign through
``campaigns create``, not approved: nothing is sent), then runs each command ``--runs`` times as a
fresh process (the console script in the venv, as a user runs it) and prints the median and the
maximum wall seconds of each, against its target, and its median CPU seconds (user + system: less
sensitive than wall time to other jobs on the machine):

- ``campaign-dispatch --help``                  target: median <= 0.3 s
- ``campaign-dispatch campaigns show <id>``     target: median <= 0.5 s
- ``campaign-dispatch status``                  (no target; the in-process broker: no Redis)

Every command runs with DATABASE_URL (the temporary SQLite file), STORAGE_URL (a temporary
directory), BROKER_URL=memory://, LOG_FORMAT=json and LOG_LEVEL=WARNING; the temporary directory is
removed at the end. Each command runs once untimed first (the page cache). ``python -c pass`` is
timed too: the interpreter's own start, the floor; and the import of the models with SQLAlchemy's
ORM and pydantic-settings, which ``campaigns show`` cannot do without (the rest of its time is the
CLI, the settings, one query and its JSON). Other jobs on the machine lengthen wall times (and CPU
times less): the load average is printed first.

    .venv/bin/python benchmarks/cli_startup.py
    .venv/bin/python benchmarks/cli_startup.py --runs 20

Where the time goes: ``.venv/bin/python -X importtime -c "import worker.cli.main" 2>&1 | sort -t'|' -k2 -n | tail -40``
for the start, and for one command (in a directory with such a database, DATABASE_URL set)
``.venv/bin/python -X importtime -c "from worker.cli.main import main; main()" campaigns show ID 2>&1 >/dev/null | sort -t'|' -k2 -n | tail -40``.
What ``campaigns show`` must not import (the write side, templates, the ledger, structlog and
rich, Dramatiq) is held by tests/worker/test_cli_imports.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("campaign-dispatch")
TARGETS = {"--help": 0.3, "campaigns show": 0.5}
# What `campaigns show` imports that it cannot do without: SQLAlchemy with its ORM (the models are
# declarative), the models, and pydantic-settings (Settings); with the collector as the CLI has it
# (worker/cli/startup.py: paused while importing, nothing traced at exit).
ORM_FLOOR = "import gc; gc.disable(); import storage.db, storage.models, pydantic_settings; gc.freeze()"


def campaign_payload() -> dict:
    """An email campaign that stays a draft: not approved, no send_at."""
    return {"name": "Startup benchmark", "type": "email", "approved": False, "template_id": 2,
            "message": {"subject": "Hello {{ contact.first_name }}", "sender": "news@acme.example",
                        "content": "<p>Dear {{ contact.first_name }},</p>"},
            "filter": [{"field": "contact.fixed_fields.last_name", "operator": "nempty"}]}


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run ``campaign-dispatch ARGS``; its stdout (raises with its stderr when it fails)."""
    done = subprocess.run([str(EXE), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"campaign-dispatch {' '.join(args)} exited {done.returncode}: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def prepare(env: dict[str, str], workdir: Path) -> str:
    """Migrate the database, load the sample data, create one campaign; its id."""
    sys.path.insert(0, str(ROOT))
    from worker.cli.demo import demo_bundle  # the parent only: the timed processes are fresh

    cli(env, workdir, "db", "upgrade")
    bundle = workdir / "bundle.json"
    bundle.write_text(json.dumps(demo_bundle(contacts=10), ensure_ascii=False), encoding="utf-8")
    cli(env, workdir, "load", str(bundle))
    payload = workdir / "campaign.json"
    payload.write_text(json.dumps(campaign_payload()), encoding="utf-8")
    return json.loads(cli(env, workdir, "campaigns", "create", str(payload), "--user", "1"))["id"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(env: dict[str, str], cwd: Path, args: list[str], runs: int,
          exe: list[str] | None = None) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of ``runs`` runs of ``campaign-dispatch ARGS`` (or of
    ``exe ARGS``), one after the other, each checked to exit 0."""
    command = [*(exe or [str(EXE)]), *args]
    walls, cpus = [], []
    for _ in range(runs):
        cpu, started = _children_cpu(), time.perf_counter()
        done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              check=False)
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: "
                               f"{done.stderr.decode(errors='replace').strip()}")
    return walls, cpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command (default 10)")
    args = parser.parse_args()
    print(f"command: .venv/bin/python benchmarks/cli_startup.py --runs {args.runs}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    ok = True
    with tempfile.TemporaryDirectory(prefix="cd_cli_startup_") as tmp:
        workdir = Path(tmp)
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
               "STORAGE_URL": f"file://{workdir / 'objects'}", "BROKER_URL": "memory://",
               "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}
        campaign_id = prepare(env, workdir)
        commands = {"--help": ["--help"], "campaigns show": ["campaigns", "show", campaign_id],
                    "status": ["status"]}
        for argv in commands.values():  # warm the page cache: a first run reads its modules from disk
            timed(env, workdir, argv, 1)
        floor = statistics.median(timed(env, workdir, [], args.runs, exe=[sys.executable, "-c", "pass"])[0])
        print(f"{'python -c pass (the floor)':<36} median {floor:5.3f} s")
        walls, cpus = timed(env, workdir, [], args.runs, exe=[sys.executable, "-c", ORM_FLOOR])
        print(f"{'import ORM, models, pydantic-settings':<36} median {statistics.median(walls):5.3f} s  "
              f"max {max(walls):5.3f} s  CPU median {statistics.median(cpus):5.3f} s")
        for label, argv in commands.items():
            walls, cpus = timed(env, workdir, argv, args.runs)
            median, worst = statistics.median(walls), max(walls)
            target = TARGETS.get(label)
            verdict = ""
            if target is not None:
                met = median <= target
                ok = ok and met
                verdict = f"  target <= {target:.1f} s: {'met' if met else 'NOT met'}"
            print(f"{'campaign-dispatch ' + label:<36} median {median:5.3f} s  max {worst:5.3f} s  "
                  f"CPU median {statistics.median(cpus):5.3f} s  ({args.runs} runs){verdict}")
    print(f"reproduce: .venv/bin/python benchmarks/cli_startup.py --runs {args.runs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
