"""Benchmark: the HTTP API (``campaign-dispatch api --workers 2``, FastAPI on uvicorn) under wrk.

Creates a fresh PostgreSQL database and prepares it through the CLI, as an operator would: ``db
upgrade``, ``load`` of a bundle (settings, a team, two users, an email template, N contacts) and
``tokens create --user 1``. Checks that the Redis db is not used by anyone else, starts ``campaign-
dispatch api --workers W`` (a subprocess, LOG_FORMAT=json, LOG_LEVEL=WARNING) and waits for ``GET
/healthz``. Through ``POST /campaigns`` it creates 30 campaigns due in 30 days (``execute_now``
false: nothing is sent, no worker runs) and one more whose ledger it fills with SQL (300 sent, 50
failed, 150 pending) and marks ``sending``, so that ``GET /campaigns/:id`` counts real progress.
It also counts the SQL statements and pool checkouts of one request of each kind, through the same
application in this process (FastAPI's TestClient): figures the machine's load does not move.

Then three loads, one after the other, each for --seconds with wrk (2 threads, 32 connections,
the bearer token): (a) ``GET /campaigns/<the one in flight>``, (b) ``GET /campaigns?per_page=15``,
(c) ``POST /campaigns`` (the same body each time). Per load: requests/s, p50 and p99 latency,
non-2xx answers and socket errors (a Lua ``done`` hook prints wrk's own figures as JSON), the CPU
seconds of the API processes (the uvicorn parent and its children) per request, of PostgreSQL and
of wrk, and PostgreSQL transactions per request and sessions opened. Checks: no non-2xx answer nor
socket error in (a) and (b), (a) shows the ledger's counts, every 2xx of (c) made one campaign, the
API logged no error, the Redis db got no key. Prints the figures and the command that reproduces
them, saves them as JSON in benchmarks/results/ (the API's log beside them), stops the server and
drops the database.

    .venv/bin/python benchmarks/api_load.py
    .venv/bin/python benchmarks/api_load.py --seconds 30 --connections 64
    .venv/bin/python benchmarks/api_load.py --profile              # + py-spy (GIL samples) of each API process
    .venv/bin/python benchmarks/api_load.py --server uvicorn       # uvicorn's command line, same app factory
    .venv/bin/python benchmarks/api_load.py --client python        # without wrk (the client shares the CPU)

wrk is Debian's ``wrk``: the script installs it (apt-get, as root) when it is missing, and falls back
to a Python client (asyncio + httpx, --connections concurrent connections, in this process) when it
cannot; that client takes a good part of the 2 cores from the server, so its figures are lower.

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres), BENCH_REDIS_URL
(redis://127.0.0.1:6379/14; nothing is written to it). Exit status: 0 when every check held, 1 when
one failed (or the API did not start), 3 when the watchdog (--timeout) stopped the run. Figures
skew when other jobs share the machine: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import func, insert, select, text, update  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    RESULTS, TICK, BenchDatabase, apt_command, cleanup, collect_profiles, cpu_by_role, cpu_snapshot, end_summary,
    ensure_installed, exit_status, free_port, git_describe, log, machine_before, postmaster_pid, proc_kib,
    reaped_cpu_s, recorded,
    redis_db_is_ours, reproduce_command, spawned_children, start_profilers, stop_profilers, stop_workers,
    summarize_profile, target_lines, wait_http_ok)
from storage.db import make_engine  # noqa: E402
from storage.models import Campaign, Contact, Recipient  # noqa: E402
from storage.timefmt import fmt, now as utcnow  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CLI = Path(sys.executable).with_name("campaign-dispatch")
WRK = "/usr/bin/wrk"
LEDGER = {"sent": 300, "failed": 50, "pending": 150}  # the campaign in flight's ledger rows
TARGET_RPS, TARGET_P99_MS = 1000, 50
FIRST = ["Søren", "Anna", "Zoë", "Mads", "Hélène", "Oliver", "Freja", "Björn", "Ida", "Noah"]

# wrk's done() hook: its own figures as one JSON line (latencies in microseconds), instead of the
# rounded text it prints. errors.status counts answers with a status above 399.
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


# ----------------------------------------------------------------------------- data
def contact(i: int) -> dict:
    """One seed-shaped contact (tests/e2e.py's shape)."""
    values = {"first_name": FIRST[i % len(FIRST)], "last_name": "Larsen", "email": f"person{i}@example.com",
              "city": "Aarhus", "country": "Denmark"}
    return {
        "id": str(uuid.UUID(int=10**9 + i)), "b2c": True, "team_id": 1, "status": None, "user": {"id": 1 + i % 2},
        "fixed_fields": [{"name": k, "value": v} for k, v in values.items()],
        "custom_fields": {"tier": "gold" if i % 3 == 0 else "silver"},
        "consent": {"email": {"consent_given": True, "updated_at": ""}},
    }


def bundle(n: int) -> dict:
    return {
        "settings": {"domain_slug": "acme", "consent": {"custom": True, "unsubscribe_url": "https://acme.example/unsub"}},
        "teams": [{"id": 1, "name": "Sales"}],
        "users": [{"id": 1, "first_name": "Doe", "last_name": "John", "email": "john@acme.example", "team_id": 1},
                  {"id": 2, "first_name": "Ann", "last_name": "Lee", "email": "ann@acme.example", "team_id": 1}],
        "templates": [{"id": 2, "type": "email", "company_id": 1, "title": "Email", "user_id": 1,
                       "content": "<html><body><div class='wrap'>{{ content }}</div></body></html>"}],
        "contacts": [contact(i) for i in range(n)],
    }


def payload(name: str) -> dict:
    """An approved email campaign due in 30 days, not executed now: it stays ``pending``."""
    return {"name": name, "type": "email", "approved": True, "execute_now": False,
            "send_at": fmt(utcnow() + timedelta(days=30)), "template_id": 2,
            "message": {"subject": "Hi {{ contact.first_name }}", "sender": "news@acme.example",
                        "content": "<p>Dear {{ contact.first_name }} ({{ contact.custom_fields.tier }})</p>"},
            "filter": [{"field": "contact.fixed_fields.last_name", "operator": "eq", "value": "larsen"}]}


# ----------------------------------------------------------------------------- load generators
def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (wrk, once it has exited)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_wrk(url: str, token: str, script: Path, args: argparse.Namespace, seconds: float) -> tuple[dict, int]:
    """One wrk run; its figures (from the done hook and the text) and its pid."""
    cmd = [WRK, "--latency", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds:g}s",
           "--timeout", "5s", "-H", f"Authorization: Bearer {token}", "-s", str(script), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=seconds + 60)
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    raw = json.loads(line.split(" ", 1)[1])
    errors = {k: raw[k] for k in ("connect", "read", "write", "timeout")}
    return {"requests": raw["requests"], "seconds": round(raw["duration_us"] / 1e6, 2),
            "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p90_ms": round(raw["p90_us"] / 1000, 2),
            "p99_ms": round(raw["p99_us"] / 1000, 2), "mean_ms": round(raw["mean_us"] / 1000, 2),
            "max_ms": round(raw["max_us"] / 1000, 2), "non_2xx": raw["status"], "socket_errors": errors,
            "kib_per_request": round(raw["bytes"] / max(raw["requests"], 1) / 1024, 2)}, proc.pid


async def python_client(url: str, token: str, method: str, body: dict | None, connections: int,
                        seconds: float) -> dict:
    """The fallback: ``connections`` concurrent requests in a loop for ``seconds``, asyncio + httpx."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    content = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", **({"Content-Type": "application/json"} if content else {})}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        started = time.perf_counter()
        until = started + seconds

        async def loop() -> None:
            while time.perf_counter() < until:
                t = time.perf_counter()
                try:
                    response = await client.request(method, url, content=content, headers=headers)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - t)
                statuses[response.status_code] += 1

        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2) if latencies else 0.0

    n = len(latencies)
    return {"requests": n, "seconds": round(elapsed, 2), "requests_per_s": round(n / elapsed, 1),
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "mean_ms": round(sum(latencies) / max(n, 1) * 1000, 2), "max_ms": pct(100),
            "non_2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300), "statuses": dict(statuses),
            "socket_errors": dict(errors)}


# ----------------------------------------------------------------------------- the server
def server_command(server: str, port: int, workers: int) -> list[str]:
    """``campaign-dispatch api``, or (``--server uvicorn``) uvicorn's own command line serving the
    factory that ``api --workers N`` hands uvicorn, with the same settings (no access log, no
    ``server`` header, proxy headers, backlog 2048)."""
    if server == "cli":
        return [str(CLI), "api", "--port", str(port), "--workers", str(workers)]
    return [str(Path(sys.executable).with_name("uvicorn")), "worker.api.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
            "--no-server-header", "--proxy-headers", "--backlog", "2048", "--log-level", "warning"]


def sql_per_request(db_url: str, token: str, flight: str) -> dict:
    """SQL statements and pool checkouts (each one a pre-ping round trip too) of one request of each
    load, through the application in this process (FastAPI's TestClient): what each request costs
    PostgreSQL whatever the machine's load. The creates make two campaigns more."""
    import warnings

    from sqlalchemy import event

    from worker.api.app import create_api
    from worker.pipeline.app import App
    from worker.runtime.settings import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient warns about httpx
        from fastapi.testclient import TestClient

    app = App(Settings(database_url=db_url, broker_url="memory://", log_level="WARNING", log_format="json"))
    statements: list[str] = []
    checkouts: list[int] = []
    event.listen(app.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    event.listen(app.engine.pool, "checkout", lambda *a: checkouts.append(1))
    out = {}
    try:
        client = TestClient(create_api(app), headers={"Authorization": f"Bearer {token}"})
        for name, method, path, body in (("show", "GET", f"/campaigns/{flight}", None),
                                         ("list", "GET", "/campaigns?per_page=15", None),
                                         ("create", "POST", "/campaigns", payload("Counted"))):
            client.request(method, path, json=body)  # a first request warms the caches
            statements.clear(), checkouts.clear()
            status = client.request(method, path, json=body).status_code
            out[name] = {"status": status, "statements": len(statements), "pool_checkouts": len(checkouts)}
    finally:
        app.close()
    return out


# ----------------------------------------------------------------------------- the run
class Run:
    """One benchmark run: what it started (stopped in ``close``) and the figures so far."""

    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        self.args, self.stamp = args, stamp
        self.deadline = time.monotonic() + args.timeout
        self.db = BenchDatabase("api")
        self.rds = redis.Redis.from_url(REDIS_URL)
        self.workdir = Path(tempfile.mkdtemp(prefix="cd-bench-api-"))
        self.log_path = RESULTS / f"api_load-{stamp}-api.log"
        self.result: dict = {}
        self.proc: subprocess.Popen | None = None
        self.engine = None
        self.port = args.port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def cli(self, *argv: str) -> str:
        """``campaign-dispatch ARGV`` against this run's database; its stdout."""
        done = subprocess.run([str(CLI), *argv], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(10.0, self.deadline - time.monotonic()))
        if done.returncode != 0:
            raise RuntimeError(f"campaign-dispatch {' '.join(argv)} exited with {done.returncode}: "
                               f"{done.stderr.strip()[-800:]}")
        return done.stdout

    def setup(self) -> None:
        """Database (migrated, loaded, a token) through the CLI; the API started and healthy."""
        db_url = self.db.create()
        self.env = {**os.environ, "DATABASE_URL": db_url, "BROKER_URL": REDIS_URL, "LOG_FORMAT": "json",
                    "LOG_LEVEL": "WARNING"}
        self.engine = make_engine(db_url)
        started = time.perf_counter()
        self.cli("db", "upgrade")
        path = self.workdir / "bundle.json"
        path.write_text(json.dumps(bundle(self.args.contacts), ensure_ascii=False), encoding="utf-8")
        self.cli("load", str(path))
        self.token = json.loads(self.cli("tokens", "create", "--user", "1", "--name", "api_load"))["token"]
        self.result["setup_s"] = round(time.perf_counter() - started, 1)
        redis_db_is_ours(self.rds)
        self.redis_keys_before = self.rds.dbsize()
        log(f"database ready ({self.args.contacts} contacts) in {self.result['setup_s']} s; starting the API "
            f"on port {self.port} with {self.args.workers} worker process(es)")
        cmd = server_command(self.args.server, self.port, self.args.workers)
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=self.log_path.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        t = time.monotonic()
        if not wait_http_ok(f"{self.base}/healthz", min(60.0, self.deadline - t), 0.1, self.proc):
            tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"the API did not answer GET /healthz with 200 (exit {self.proc.poll()}); the end of "
                               f"its log ({self.log_path.relative_to(ROOT)}): {tail[-1500:]}")
        self.result["api_ready_s"] = round(time.monotonic() - t, 1)
        # With --workers 1 the parent serves; with more, its spawned children do.
        self.api_children = spawned_children(self.proc.pid) or [self.proc.pid]
        self.result["api_idle_rss_mib"] = [round((proc_kib(p, "VmRSS") or 0) / 1024, 1) for p in self.api_children]
        log(f"API ready in {self.result['api_ready_s']} s (worker processes {self.api_children})")

    def campaigns(self) -> None:
        """``--campaigns`` campaigns through the API, and one in flight with a ledger filled by SQL."""
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as client:
            for i in range(self.args.campaigns):
                r = client.post("/campaigns", json=payload(f"Spring news {i + 1}"))
                if r.status_code != 201:
                    raise RuntimeError(f"POST /campaigns answered {r.status_code}: {r.text[:500]}")
            # Times are whole seconds: the next second's campaign is the newest, on the first page of the list.
            time.sleep(1.05)
            r = client.post("/campaigns", json=payload("In flight"))
            if r.status_code != 201:
                raise RuntimeError(f"POST /campaigns answered {r.status_code}: {r.text[:500]}")
            self.flight = r.json()["id"]
            statuses = [s for s, n in LEDGER.items() for _ in range(n)]
            now = utcnow()
            with self.engine.begin() as conn:
                ids = conn.scalars(select(Contact.id).order_by(Contact.id).limit(len(statuses))).all()
                if len(ids) < len(statuses):
                    raise RuntimeError(f"--contacts must be at least {len(statuses)} (the ledger's rows)")
                conn.execute(insert(Recipient), [
                    {"campaign_id": self.flight, "contact_id": cid, "status": st, "attempts": int(st != "pending"),
                     "reason": "550 mailbox unavailable" if st == "failed" else None,
                     "created_at": now, "updated_at": now} for cid, st in zip(ids, statuses)])
                conn.execute(update(Campaign).where(Campaign.id == self.flight)
                             .values(status="sending", dispatched_at=now, total=len(statuses), progress_at=now))
            shown = client.get(f"/campaigns/{self.flight}")
            listed = client.get("/campaigns", params={"per_page": 15})
        want = {"total": len(statuses), "skipped": 0, **LEDGER}
        got = shown.json().get("progress") if shown.status_code == 200 else None
        self.result["checks"] = {
            "show_counts_ledger": shown.status_code == 200 and got == want and shown.json().get("status") == "sending",
            "list_shows_it_first": listed.status_code == 200 and len(listed.json().get("data", [])) == 15
            and listed.json()["data"][0]["id"] == self.flight,
        }
        self.result["sql_per_request"] = sql_per_request(self.env["DATABASE_URL"], self.token, self.flight)
        self.result["campaign_in_flight"] = {"id": self.flight, "progress": got, "status_code": shown.status_code,
                                             "show_bytes": len(shown.content), "list_bytes": len(listed.content)}
        log(f"{self.args.campaigns + 1} campaigns created; the one in flight shows {got}")

    def load(self, name: str, label: str, method: str, path: str, body: dict | None) -> dict:
        """One load for --seconds (after --warmup s of the same, unrecorded, for GETs); its figures."""
        a = self.args
        url = f"{self.base}{path}"
        script = self.workdir / f"{name}.lua"
        lua = REPORT_LUA
        if body is not None:
            lua = (f"wrk.method = {json.dumps(method)}\nwrk.body = {json.dumps(json.dumps(body))}\n"
                   'wrk.headers["Content-Type"] = "application/json"\n') + lua
        script.write_text(lua)
        if a.warmup and body is None:
            self.generate(url, script, method, body, a.warmup)
            time.sleep(1.2)  # its statistics reported before this load's are read
        profilers = (start_profilers(self.api_children, f"api_load-{self.stamp}-{name}", rate=100, gil=True)
                     if a.profile else [])
        pg0, cpu0, rusage0, t0 = self.pg_counters(), cpu_snapshot(), children_cpu_s(), time.monotonic()
        postmaster = postmaster_pid(cpu0)
        reaped0 = reaped_cpu_s(postmaster) if postmaster else 0.0
        figures, client_pid = self.generate(url, script, method, body, a.seconds)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_snapshot()
        reaped = round(reaped_cpu_s(postmaster) - reaped0, 1) if postmaster else 0.0
        stop_profilers(profilers)
        time.sleep(1.2)  # PostgreSQL backends report their statistics at most once a second
        pg = {k: v - pg0[k] for k, v in self.pg_counters().items()}
        cpu = cpu_by_role(cpu0, cpu1, elapsed, self.proc.pid, client_pid, supervisor_role="api",
                          sink_role="wrk", self_role="benchmark (client)" if a.client == "python" else "benchmark")
        if a.client == "wrk":  # wrk has exited: its CPU is in this process's children's usage, not in /proc
            cpu["wrk"] = round(children_cpu_s() - rusage0, 1)
            cpu["everything else"] = round(cpu["everything else"] - cpu["wrk"], 1)
        # PostgreSQL backends whose connection closed during the load (the pool's overflow): the postmaster reaped them.
        cpu["postgres, exited backends"] = reaped
        cpu["everything else"] = round(cpu["everything else"] - reaped, 1)
        collect_profiles(profilers, figures, "profile_share_pct", profile_shares)
        n = max(figures["requests"], 1)
        figures.update({"label": label, "method": method, "path": path, "cpu_seconds": cpu,
                        "api_cpu_ms_per_request": round(cpu.get("api", 0) * 1000 / n, 3),
                        "postgres_cpu_ms_per_request": round(cpu.get("postgres", 0) * 1000 / n, 3),
                        # Round trips and connection churn, from pg_stat_database.
                        "pg_transactions_per_request": round(pg["transactions"] / n, 2),
                        "pg_sessions_opened": pg["sessions"],
                        # How evenly the kernel spread the connections over the API's processes.
                        "api_cpu_s_by_process": [round((cpu1[1].get(pid, (0,))[0] - cpu0[1].get(pid, (0,))[0]) / TICK, 1)
                                                 for pid in self.api_children]})
        log(f"{label}: {figures['requests_per_s']} req/s, p50 {figures['p50_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, non-2xx {figures['non_2xx']}")
        return figures

    def pg_counters(self) -> dict[str, int]:
        """This database's transactions (commits + rollbacks) and sessions opened so far."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database "
                                    "WHERE datname = current_database()")).one()
            conn.rollback()
        return {"transactions": int(row[0]), "sessions": int(row[1])}

    def generate(self, url: str, script: Path, method: str, body: dict | None, seconds: float) -> tuple[dict, int | None]:
        if self.args.client == "wrk":
            return run_wrk(url, self.token, script, self.args, seconds)
        return asyncio.run(python_client(url, self.token, method, body, self.args.connections, seconds)), None

    def loads(self) -> None:
        machine_before(self.result, self.args.wait_quiet, self.deadline)
        count = select(func.count()).select_from(Campaign)
        with self.engine.connect() as conn:
            campaigns_before = conn.scalar(count)
        self.result["loads"] = loads = {}
        rows = sum(LEDGER.values())
        loads["show"] = self.load("show", f"GET /campaigns/:id ({rows} ledger rows)", "GET",
                                  f"/campaigns/{self.flight}", None)
        loads["list"] = self.load("list", "GET /campaigns?per_page=15", "GET", "/campaigns?per_page=15", None)
        loads["create"] = self.load("create", "POST /campaigns", "POST", "/campaigns", payload("Load test"))
        with self.engine.connect() as conn:
            made = conn.scalar(count) - campaigns_before
        ok_posts = loads["create"]["requests"] - loads["create"]["non_2xx"]
        loads["create"]["campaigns_made"] = made
        checks = self.result["checks"]
        for key in ("show", "list"):
            x = loads[key]
            checks[f"{key}_all_2xx"] = x["non_2xx"] == 0 and not any(x["socket_errors"].values())
        # wrk counts the answers it read; up to one request per connection may be cut off at the end.
        checks["create_each_2xx_made_one"] = ok_posts <= made <= ok_posts + self.args.connections
        self.result["targets_met"] = {
            f"{loads[k]['label']} >= {TARGET_RPS:,} req/s and p99 <= {TARGET_P99_MS} ms":
            loads[k]["requests_per_s"] >= TARGET_RPS and loads[k]["p99_ms"] <= TARGET_P99_MS for k in ("show", "list")}

    def after(self) -> bool:
        """The API's peak RSS, its log's errors, the Redis db untouched; whether every check held."""
        self.result["api_peak_rss_mib"] = [round((proc_kib(p, "VmHWM") or 0) / 1024, 1) for p in self.api_children]
        checks = self.result["checks"]
        checks["redis_keys_added"] = self.rds.dbsize() - self.redis_keys_before
        errors = api_log_errors(self.log_path)
        checks["api_log_errors"] = errors["count"]
        if errors["count"]:
            self.result["api_log_error_samples"] = errors["samples"]
        return all(v for k, v in checks.items() if isinstance(v, bool)) and not errors["count"] \
            and not checks["redis_keys_added"]

    def stop_api(self) -> None:
        if self.proc is not None:
            stop_workers(self.proc, "the API")

    def close(self) -> None:
        """Stop the API, drop the database, remove the work files (each step on its own)."""
        cleanup([self.stop_api, lambda: self.engine and self.engine.dispose(), self.db.drop, self.rds.close,
                 lambda: shutil.rmtree(self.workdir, ignore_errors=True)])

    def kill(self) -> None:
        """Last resort of the hard watchdog: the processes this run started."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


CATEGORIES = [  # (label, substring of a py-spy frame): the first label with a frame in the stack wins
    ("auth dependency (token lookup, its own session)", "caller (worker/api/auth.py"),
    ("endpoint: SQL (SQLAlchemy, psycopg)", "sqlalchemy/"), ("endpoint: SQL (SQLAlchemy, psycopg)", "psycopg/"),
    ("endpoint: templates, validation", "template_errors ("), ("endpoint: templates, validation", "check_campaign ("),
    ("endpoint: other", "(worker/pipeline/"), ("endpoint: other", "(storage/"), ("endpoint: other", "(worker/api/routes"),
    ("thread pool hand-offs (anyio)", "anyio/"),
    ("fastapi, starlette", "fastapi/"), ("fastapi, starlette", "starlette/"), ("uvicorn, HTTP", "uvicorn/"),
]


def profile_shares(path: Path) -> dict[str, float]:
    """Share (%) of the GIL-holding samples per category (who the time is spent for)."""
    return summarize_profile(path, CATEGORIES)


def api_log_errors(path: Path) -> dict:
    """Lines of the API's log at level error or above, or with a traceback: how many, the first three."""
    samples, count = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            level = str(json.loads(line).get("level", "")).lower()
        except (ValueError, AttributeError):
            level = "error" if "Traceback" in line or "ERROR" in line else ""
        if level in ("error", "critical", "exception"):
            count += 1
            if len(samples) < 3:
                samples.append(line[:2000])
    return {"count": count, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="each load's duration (s)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections of the client")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (api --workers)")
    parser.add_argument("--port", type=int, default=0, help="the API's port (default: a free one)")
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--campaigns", type=int, default=30, help="campaigns created before the loads")
    parser.add_argument("--warmup", type=float, default=2, help="unrecorded seconds of each GET load first")
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk",
                        help="wrk (installed if missing), or the Python fallback (asyncio + httpx)")
    parser.add_argument("--server", choices=("cli", "uvicorn"), default="cli",
                        help="cli: `campaign-dispatch api`; uvicorn: uvicorn's command line on the same factory")
    parser.add_argument("--profile", action="store_true", help="py-spy record each API process during each load")
    parser.add_argument("--timeout", type=float, default=600, help="watchdog: stop everything after this (s)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S s for the machine to be under 25%% busy (others' jobs skew the figures)")
    args = parser.parse_args()
    env = {"BENCH_REDIS_URL": REDIS_URL} if "BENCH_REDIS_URL" in os.environ and "@" not in REDIS_URL else {}
    options = [f"--seconds {args.seconds:g}", f"--connections {args.connections}", f"--workers {args.workers}",
               f"--contacts {args.contacts}", *([f"--threads {args.threads}"] if args.threads != 2 else []),
               *([f"--port {args.port}"] if args.port else []),
               *([f"--client {args.client}"] if args.client != "wrk" else []), *(["--profile"] if args.profile else []),
               *([f"--server {args.server}"] if args.server != "cli" else []),
               *([f"--wait-quiet {args.wait_quiet:g}"] if args.wait_quiet else [])]
    reproduce = reproduce_command("api_load.py", options, env)
    fallback_note = None
    if args.client == "wrk" and not ensure_installed(WRK, apt_command("wrk"), " (Debian's wrk)"):
        args.client = "python"
        fallback_note = "wrk could not be installed"
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    run = Run(args, stamp)
    client = (f"wrk {args.threads} threads x {args.connections} connections" if args.client == "wrk" else
              f"Python asyncio+httpx, {args.connections} connections, in the benchmark process: it shares the "
              f"2 cores with the server, so the figures are lower than wrk's"
              + (f" ({fallback_note})" if fallback_note else ""))
    server = ("campaign-dispatch api" if args.server == "cli" else "uvicorn worker.api.app:create_app --factory")
    run.result.update({"benchmark": "api_load", "server": f"{server} --workers {args.workers}", "seconds": args.seconds, "connections": args.connections,
                       "threads": args.threads, "workers": args.workers, "contacts": args.contacts,
                       "campaigns": args.campaigns, "client": client, "reproduce": reproduce, "git": git_describe()})
    hard = threading.Timer(args.timeout + 120, lambda: (run.kill(), os._exit(3)))
    hard.daemon = True
    hard.start()
    ok = False
    with recorded(run.result, RESULTS / f"api_load-{stamp}.json", summary, reproduce, watchdog=args.timeout,
                  started=started, print_json=False):
        try:
            run.setup()
            run.campaigns()
            run.loads()
            ok = run.after()
        finally:
            run.close()
            hard.cancel()
    return exit_status(ok, run.result)


def summary(r: dict) -> str:
    """The headline figures in a few lines."""
    lines = [f"\n== HTTP API, `{r['server']}`, {r['contacts']} contacts; {r['seconds']:g} s per load; "
             f"client: {r['client']}"]
    if "sql_per_request" in r:
        lines.append("SQL statements (pool checkouts) per request: " + ", ".join(
            f"{k} {v['statements']} ({v['pool_checkouts']})" for k, v in r["sql_per_request"].items()))
    for x in r.get("loads", {}).values():
        cpu = x["cpu_seconds"]
        lines.append(f"{x['label']}: {x['requests_per_s']:,.0f} req/s, p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms, "
                     f"non-2xx {x['non_2xx']}" + (f", campaigns made {x['campaigns_made']}" if "campaigns_made" in x else "")
                     + f"; CPU ms/request: API {x['api_cpu_ms_per_request']}, postgres {x['postgres_cpu_ms_per_request']}")
        lines.append(f"  cpu-s: API {cpu.get('api')} (by process {x['api_cpu_s_by_process']}), postgres "
                     f"{cpu.get('postgres')} + {cpu.get('postgres, exited backends')} in backends that exited "
                     f"({x['pg_sessions_opened']} sessions opened), everything else {cpu['everything else']}"
                     + (f", wrk {cpu['wrk']}" if "wrk" in cpu else "")
                     + f"; machine busy {cpu['machine busy']} of {cpu['machine capacity']}")
        for name, shares in x.get("profile_share_pct", {}).items():
            top = ", ".join(f"{k} {v}%" for k, v in list(shares.items())[:6] if k != "samples")
            lines.append(f"  profile {name}: {top} ({shares['samples']} GIL samples)")
    if "api_peak_rss_mib" in r:
        lines.append(f"API worker RSS: idle {r.get('api_idle_rss_mib')} MiB, peak {r['api_peak_rss_mib']} MiB")
    lines += target_lines(r.get("targets_met", {}))
    if "checks" in r:
        lines.append("checks: " + ", ".join(f"{k} {v}" for k, v in r["checks"].items()))
    for sample in r.get("api_log_error_samples", []):
        lines.append(f"API log error: {sample[:400]}")
    return end_summary(lines, r)


if __name__ == "__main__":
    sys.exit(main())
