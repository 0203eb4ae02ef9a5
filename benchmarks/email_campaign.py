"""Benchmark: one email campaign to N recipients through the real service, against Postfix's smtp-sink.

Creates a fresh PostgreSQL database with N contacts, checks that the Redis db is not used by anyone
else and flushes it, starts smtp-sink and ``campaign-dispatch worker --processes 2 --threads 8``
(a subprocess), runs the scheduler's jobs here every 0.5 s, creates an ``execute_now`` campaign
and times it from ``send_at`` to ``completed``. Meanwhile it samples each worker process's peak
RSS (/proc VmHWM), Redis ``used_memory`` and the sink's message counter, and counts the CPU
seconds of the workers, PostgreSQL and the rest of the machine. Before and after the campaign,
with the workers idle or stopped, bare aiosmtplib sends N pre-built messages (the campaign's own,
built by the project) over 10 connections to the same sink: the raw rate, and project/raw
against their mean. Checks: the sink got N messages each time, and the ledger holds N ``sent``
rows. Prints the figures and the command that reproduces them, and saves them as JSON in
benchmarks/results/.

    .venv/bin/python benchmarks/email_campaign.py                       # 20,000 recipients
    .venv/bin/python benchmarks/email_campaign.py --recipients 100000
    .venv/bin/python benchmarks/email_campaign.py --profile             # + py-spy of each worker

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres), BENCH_REDIS_URL
(redis://127.0.0.1:6379/14). Worker tuning variables (DELIVERY_BATCH_SIZE, SMTP_POOL_SIZE, ...)
are passed to the workers and recorded. Exit status: 0 when every check held, 1 when one
failed, 2 when smtp-sink is missing and cannot be installed, 3 when the watchdog (--timeout)
stopped the run. Figures skew when other jobs share the machine: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from scheduler.service import run_once  # noqa: E402
from storage.db import make_engine, safe_identifier  # noqa: E402
from storage.loader import load_bundle, load_jsonl  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Campaign, CampaignMessage, Contact, Recipient, User  # noqa: E402
from worker.pipeline import campaign_service  # noqa: E402
from worker.pipeline.actors import declare_actors  # noqa: E402
from worker.pipeline.app import App  # noqa: E402
from worker.runtime.broker import NAMESPACE, make_broker  # noqa: E402
from worker.channels.campaign_runtime import build_runtime  # noqa: E402
from worker.runtime.logging import configure_logging  # noqa: E402
from worker.pipeline.roles import enqueue_for  # noqa: E402
from worker.runtime.settings import Settings  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SINK = "/usr/sbin/smtp-sink"
INSTALL = ("apt-get update && echo 'postfix postfix/main_mailer_type select No configuration' | "
           "debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install -y "
           "--no-install-recommends postfix")
RESULTS = ROOT / "benchmarks" / "results"
TUNING = ("DELIVERY_BATCH_SIZE", "SMTP_POOL_SIZE", "LEASE_SECONDS", "STALL_SECONDS", "MAX_ATTEMPTS")
FIRST = ["Søren", "Anna", "Zoë", "Mads", "Hélène", "Oliver", "Freja", "Björn", "Ida", "Noah"]
WRAPPER = """<!doctype html><html><head><meta charset="utf-8"><title>{{ campaign.name }}</title></head>
<body style="margin:0;padding:0;background:#f4f4f4;font-family:Arial,Helvetica,sans-serif">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table role="presentation" width="600" style="background:#ffffff;border-radius:4px">
<tr><td style="padding:24px 32px;background:#0b5394;color:#ffffff;font-size:22px">Acme Outdoor</td></tr>
<tr><td style="padding:32px;font-size:15px;line-height:22px;color:#333333">{{ content }}</td></tr>
<tr><td style="padding:16px 32px;font-size:12px;color:#777777">Acme Outdoor A/S, Strandvejen 1, 2100 Copenhagen.
You receive this email as a customer of Acme Outdoor.</td></tr></table></td></tr></table></body></html>"""
CONTENT = """<h1 style="font-size:20px">Hello {{ contact.first_name }}, spring is here</h1>
<p>As a {{ contact.custom_fields.tier }} member in {{ contact.city }} you get early access to the new
season's jackets, boots and tents. Your member number is {{ contact.custom_fields.member }}.</p>
{% if contact.custom_fields.tier == "gold" %}<p><strong>Gold members save 20% on everything until
Sunday.</strong> Use the code GOLD20 at checkout or show this email in any of our shops.</p>
{% else %}<p>Members save 10% on the whole spring collection until Sunday with the code SPRING10.</p>{% endif %}
<ul><li>Waterproof jackets from 899 kr.</li><li>Hiking boots, tested on the Camino, from 1.199 kr.</li>
<li>Two-person tents under 2 kg from 2.499 kr.</li></ul>
<p><a href="https://acme.example/spring?c={{ contact.id }}" style="color:#0b5394">See the spring collection</a></p>
<p>Questions? Reply to this email or call {{ sender.first_name }} {{ sender.last_name }} on
{{ sender.phone_number }}.</p><p>Kind regards,<br>{{ sender.first_name }} and the team at Acme Outdoor</p>"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- smtp-sink
def ensure_smtp_sink() -> str:
    """The smtp-sink binary, installing Debian's postfix (without starting its daemon) if needed."""
    if os.access(SINK, os.X_OK):
        return SINK
    if os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        print(f"smtp-sink is missing; install it with (as root):\n  {INSTALL}", file=sys.stderr)
        sys.exit(2)
    log("smtp-sink is missing: installing Debian's postfix (its daemon is not started)")
    # policy-rc.d exit 101 keeps the package scripts from starting the postfix daemon.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["bash", "-c", INSTALL], check=False, stdout=subprocess.DEVNULL)
    finally:
        if created:
            policy.unlink()
    if not os.access(SINK, os.X_OK):
        print(f"could not install smtp-sink; run:\n  {INSTALL}", file=sys.stderr)
        sys.exit(2)
    return SINK


class Sink:
    """smtp-sink on 127.0.0.1: accepts and discards. ``-c`` prints running counters, which it
    flushes only to a terminal: it writes to a pty that a thread reads."""

    def __init__(self, binary: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.cmd = [binary, "-c", "-a", *user, "-m", "512", f"127.0.0.1:{self.port}", "1000"]
        master, slave = os.openpty()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        self._count, self._tail = 0, ""
        threading.Thread(target=self._read, args=(master,), daemon=True, name="sink-reader").start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"smtp-sink did not start: {self._tail}")

    def _read(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self._tail = (self._tail + chunk.decode(errors="replace"))[-400:]
            lines = [x for x in self._tail.split("\r")[:-1] if "mesg=" in x]  # complete lines only
            if lines:
                self._count = int(lines[-1].rsplit("mesg=", 1)[1].split()[0])
        os.close(fd)

    def count(self, settle: float = 0.0) -> int:
        """Messages received so far (``sess=.. quit=.. mesg=N``); ``settle``: wait until it stops moving."""
        value = self._count
        for _ in range(20 if settle else 0):
            time.sleep(settle)
            if self._count == value:
                break
            value = self._count
        return value

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------- data
def contact_line(i: int) -> dict:
    """One seed-shaped contact; every one is selected and deliverable."""
    first = FIRST[i % len(FIRST)]
    fields = {"first_name": first, "last_name": "Larsen", "email": f"person{i}@example.com", "city": "Aarhus",
              "country": "Denmark", "mobile_phone_number": f"+45{20000000 + i}"}
    return {
        "id": str(uuid.UUID(int=10**9 + i)), "b2c": True, "team_id": 1, "status": None, "user": {"id": 1 + i % 2},
        "fixed_fields": [{"name": k, "value": v} for k, v in fields.items()],
        "custom_fields": {"tier": "gold" if i % 3 == 0 else "silver", "member": f"M{i:08d}"},
        "consent": {"email": {"consent_given": True, "updated_at": ""}},
    }


def bundle() -> dict:
    return {
        "settings": {"domain_slug": "acme", "consent": {"custom": True, "unsubscribe_url": "https://acme.example/unsub"}},
        "teams": [{"id": 1, "name": "Sales"}],
        "users": [{"id": 1, "first_name": "Doe", "last_name": "John", "email": "john@acme.example", "team_id": 1,
                   "phone_number": "+4511223344"},
                  {"id": 2, "first_name": "Ann", "last_name": "Lee", "email": "ann@acme.example", "team_id": 1,
                   "phone_number": "+4555667788"}],
        "templates": [{"id": 2, "type": "email", "company_id": 1, "title": "Newsletter", "user_id": 1,
                       "content": WRAPPER}],
    }


def payload(approved: bool = True) -> dict:
    """The campaign: ``execute_now``, or a draft (never sent) of the same message."""
    return {"name": "Spring news", "type": "email", "approved": approved, "execute_now": approved, "template_id": 2,
            "message": {"subject": "{{ contact.first_name }}, spring is here", "sender": "news@acme.example",
                        "content": CONTENT},
            "filter": [{"field": "contact.fixed_fields.last_name", "operator": "eq", "value": "larsen"}]}


def load_contacts(app: App, n: int, workdir: Path, line=None, make_bundle=None) -> float:
    """Write ``n`` contacts (``line(i)``) as JSON Lines, load the bundle and them; return seconds."""
    line, make_bundle = line or contact_line, make_bundle or bundle
    path = workdir / "contacts.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(line(i), ensure_ascii=False) + "\n")
    started = time.perf_counter()
    load_bundle(app.sessions, make_bundle())
    load_jsonl(app.sessions, path)
    path.unlink()
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- workers
def spawned_children(pid: int) -> list[int]:
    """Worker processes of the supervisor (multiprocessing spawn children, not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(found)


def proc_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> tuple[int, dict[int, tuple[int, int, str]]]:
    """Machine busy jiffies (/proc/stat) and, per process, (user+system jiffies, parent, command)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                rest = stat.rsplit(")", 1)[1].split()
                procs[int(entry.name)] = (int(rest[11]) + int(rest[12]), int(rest[1]), stat.split("(", 1)[1].rsplit(")", 1)[0])
            except (OSError, IndexError, ValueError):
                continue
    return busy, procs


def cpu_by_role(before: tuple, after: tuple, seconds: float, supervisor: int, sink: int) -> dict:
    """CPU seconds each role used between two snapshots, and what the rest of the machine used."""
    (busy0, p0), (busy1, p1) = before, after

    def role(pid: int) -> str:
        seen = set()
        while pid not in seen and pid in p1:
            seen.add(pid)
            if pid == supervisor:
                return "workers"
            pid = p1[pid][1]
        return ""

    used: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for pid, (jiffies, _, comm) in p1.items():
        delta = jiffies - p0.get(pid, (0,))[0]
        if delta <= 0:
            continue
        name = (role(pid) or ("benchmark (scheduler, sampler)" if pid == os.getpid() else "smtp-sink" if pid == sink
                else "postgres" if comm.startswith("postgres") else "redis" if comm.startswith("redis") else ""))
        (used if name else others)[name or comm] += delta
    machine = (busy1 - busy0) / TICK
    out = {k: round(v / TICK, 1) for k, v in used.most_common()}
    out["everything else"] = round(machine - sum(used.values()) / TICK, 1)
    out["everything else, largest"] = {k: round(v / TICK, 1) for k, v in others.most_common(3)}
    out["machine busy"] = round(machine, 1)
    out["machine capacity"] = round(seconds * (os.cpu_count() or 1), 1)
    return out


def wait_quiet(limit: float) -> float:
    """Wait up to ``limit`` s for a second in which the machine is less than 25% busy; return the busy share."""
    until = time.monotonic() + limit
    while True:
        before = cpu_snapshot()[0]
        time.sleep(1.0)
        share = (cpu_snapshot()[0] - before) / TICK / (os.cpu_count() or 1)
        if share < 0.25 or time.monotonic() >= until:
            return round(share, 2)


class Sampler(threading.Thread):
    """Every 0.2 s: worker VmHWM/VmRSS, Redis used_memory and queue length, the sink's counter."""

    def __init__(self, supervisor: int, rds: redis.Redis, sink: Sink) -> None:
        super().__init__(daemon=True, name="sampler")
        self.supervisor, self.rds, self.sink = supervisor, rds, sink
        self.hwm: dict[int, int] = {}
        self.redis_peak = self.redis_base = rds.info("memory")["used_memory"]
        self.queue_peak = 0
        self.sink_series: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def reset_redis_baseline(self) -> None:
        self.redis_peak = self.redis_base = self.rds.info("memory")["used_memory"]

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for pid in spawned_children(self.supervisor):
                hwm = proc_kib(pid, "VmHWM")  # the kernel's own peak: nothing between samples is missed
                if hwm is not None:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
            try:
                self.redis_peak = max(self.redis_peak, self.rds.info("memory")["used_memory"])
                self.queue_peak = max(self.queue_peak, self.rds.llen(f"{NAMESPACE}:delivery"))
            except redis.RedisError:
                pass
            self.sink_series.append((time.monotonic(), self.sink.count()))


def redis_db_is_ours(rds: redis.Redis) -> None:
    """Refuse a Redis db that other clients use: flushing it would break them, and their workers
    would take this run's messages (or this run's workers theirs)."""
    db, me = rds.connection_pool.connection_kwargs.get("db", 0), rds.client_id()
    others = [c for c in rds.client_list() if int(c.get("db", -1)) == db and int(c["id"]) != me]
    if others:
        raise RuntimeError(f"Redis db {db} has {len(others)} other client(s) (another benchmark or worker?): "
                           "set BENCH_REDIS_URL to a free db, e.g. redis://127.0.0.1:6379/13")


def start_workers(args, env: dict, log_path: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("campaign-dispatch")
    cmd = [str(exe), "worker", "--processes", str(args.processes), "--threads", str(args.threads)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_workers(proc: subprocess.Popen) -> None:
    """SIGTERM to the supervisor (which stops its children); SIGKILL its process group after 45 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            log("workers did not stop within 45 s: killing their process group")
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group we started, if any
    except ProcessLookupError:
        pass
    proc.wait()


def wait_ready(rds: redis.Redis, proc: subprocess.Popen, processes: int, deadline: float) -> None:
    """Each worker process's consumer has fetched from Redis at least once (Dramatiq heartbeats)."""
    while rds.zcard(f"{NAMESPACE}:__heartbeats__") < processes:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker supervisor exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("workers not ready")
        time.sleep(0.1)


# ----------------------------------------------------------------------------- the run
def drive(app: App, campaign_id: str, t_create: float, deadline: float) -> dict:
    """The scheduler's jobs every 0.5 s until the campaign is final; phase times from creation."""
    broker = make_broker(app.settings.broker_url)
    enqueue, s = enqueue_for(declare_actors(broker, app)), app.settings
    marks: dict = {}
    try:
        while True:
            tick = time.monotonic()
            if tick > deadline:
                raise TimeoutError(f"campaign not final: {marks}")
            run_once(app.sessions, enqueue, lease=s.lease_seconds, stall=s.stall_seconds,
                     batch_size=s.delivery_batch_size)
            with app.sessions() as session:
                c = session.get(Campaign, campaign_id)
                status, dispatched = c.status, c.dispatched_at
            now = time.monotonic() - t_create
            if status != "pending":
                marks.setdefault("claimed_s", now)
            if dispatched is not None:
                marks.setdefault("fanned_out_s", now)
            if status in ("completed", "failed", "cancelled"):
                marks["final_s"], marks["status"] = now, status
                return marks
            time.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))
    finally:
        broker.close()


def prebuilt(app: App, campaign_id: str, count: int) -> tuple[list[tuple[str, str, bytes]], dict]:
    """``count`` of the campaign's own messages, built by the project's renderer; per-message costs."""
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix)
        contacts = list(session.scalars(select(Contact).order_by(Contact.id).limit(count)))
        users = {u.id: u for u in session.scalars(select(User))}
    started = time.perf_counter()
    for c in contacts:
        runtime.render(c, users.get(c.user_id))
    rendered = time.perf_counter() - started
    started = time.perf_counter()
    mails = [(e.envelope_from, e.rcpt, e.data) for e in (runtime.email(c, users.get(c.user_id)) for c in contacts)]
    built = time.perf_counter() - started
    costs = {"render_us": round(rendered / len(contacts) * 1e6), "render_and_mime_us": round(built / len(contacts) * 1e6),
             "message_bytes": round(sum(len(m[2]) for m in mails) / len(mails))}
    return mails, costs


async def raw_send(port: int, mails: list[tuple[str, str, bytes]], total: int, connections: int) -> float:
    """Bare aiosmtplib: ``total`` messages (cycling through ``mails``) over ``connections`` connections."""
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench.local")
               for _ in range(connections)]
    await asyncio.gather(*(c.connect() for c in clients))
    todo = iter(range(total))

    async def pump(client: aiosmtplib.SMTP) -> None:
        for i in todo:
            sender, rcpt, data = mails[i % len(mails)]
            await client.sendmail(sender, [rcpt], data)

    started = time.perf_counter()
    await asyncio.gather(*(pump(c) for c in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.quit() for c in clients))
    return elapsed


def sink_marks(series: list[tuple[float, int]], start: int, total: int, t0: float) -> dict[str, float]:
    """When the sink saw the campaign's first and last message, in seconds from ``t0``."""
    first = next((t for t, c in series if c > start), None)
    last = next((t for t, c in series if c >= start + total), None)
    return {k: round(v - t0, 2) for k, v in (("first_message_s", first), ("last_message_s", last)) if v is not None}


def steady_rate(series: list[tuple[float, int]], start: int, total: int) -> float | None:
    """Messages/s at the sink between 10% and 90% of the campaign (no fan-out, no tail)."""
    lo, hi = start + total // 10, start + total * 9 // 10
    a = next((p for p in series if p[1] >= lo), None)
    b = next((p for p in series if p[1] >= hi), None)
    return round((b[1] - a[1]) / (b[0] - a[0])) if a and b and b[0] > a[0] else None


def start_profilers(pids: list[int], stamp: str) -> list[tuple[subprocess.Popen, Path]]:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        log(f"--profile needs py-spy: {Path(sys.executable).with_name('pip')} install py-spy")
        return []
    out = []
    for pid in pids:
        path = RESULTS / f"email_campaign-{stamp}-pyspy-{pid}.txt"
        # --gil: only the thread holding the GIL is sampled, so the shares are of the CPU the
        # process's Python code gets (a worker process is GIL-bound).
        cmd = [str(spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--gil", "--nonblocking",
               "--output", str(path)]
        out.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return out


CATEGORIES = [  # (label, substring of a py-spy frame): the first label with a frame in the stack wins
    ("render: html_to_text", "html_to_text ("), ("mime: build_email", "build_email ("),
    ("render: jinja", "render_template ("), ("render: context", "context (worker/channels/campaign_runtime"),
    ("recheck", "recheck ("), ("sql: claim", "claim (storage/ledger"), ("sql: load contacts", "_load_contacts ("),
    ("sql: archive", "_archive ("), ("sql: finish", "finish (storage/ledger"), ("sql: release", "release (storage/ledger"),
    ("sql: other", "sqlalchemy/"),
    ("smtp: aiosmtplib", "aiosmtplib/"), ("smtp: pool", "worker/channels/smtp.py"), ("smtp: event loop", "run_forever ("),
    ("render: other (footer, Message-ID, unsubscribe URL)", "CampaignRuntime.email ("),
    ("delivery: other", "worker/pipeline/delivery.py"), ("delivery: other", "worker/channels/email.py"),
    ("broker: dramatiq + redis", "dramatiq/"),
]


def summarize_profile(path: Path) -> dict[str, float]:
    """Share (%) of the GIL-holding samples per category, from py-spy's raw (collapsed stack) output."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        name = next((label for label, needle in CATEGORIES if needle in stack), "other")
        counts[name] += int(n)  # labels may repeat: their counts add up
    total = sum(counts.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()} | {"samples": total}


TARGETS = {"ratio_project_to_raw": 0.35, "worker_peak_rss_mib": 250, "redis_peak_growth_mib": 64}


class Run:
    """One benchmark run: what it started (stopped in ``close``) and the figures so far."""

    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        self.args, self.n, self.stamp = args, args.recipients, stamp
        self.deadline = time.monotonic() + args.timeout
        self.name = safe_identifier(f"cd_bench_email_{os.getpid()}")
        self.admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.rds = redis.Redis.from_url(REDIS_URL)
        self.workdir = Path(tempfile.mkdtemp(prefix="cd-bench-"))
        self.result: dict = {}
        self.app = self.proc = self.sink = self.sampler = None
        self.profilers: list = []

    def setup(self, binary: str) -> None:
        """Database with N contacts, a flushed Redis db, smtp-sink and ready workers."""
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {self.name} TEMPLATE template0 ENCODING 'UTF8' "
                              "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"))
        db_url = self.admin.url.set(database=self.name).render_as_string(hide_password=False)
        self.sink = Sink(binary)
        redis_db_is_ours(self.rds)
        self.rds.flushdb()
        self.app = App(Settings(database_url=db_url, broker_url=REDIS_URL, smtp_url=f"smtp://127.0.0.1:{self.sink.port}",
                                log_level="WARNING", log_format="json"))
        upgrade(self.app.engine)
        self.result["load_s"] = round(load_contacts(self.app, self.n, self.workdir), 1)
        s = self.app.settings
        self.result["settings"] = {"delivery_batch_size": s.delivery_batch_size, "smtp_pool_size": s.smtp_pool_size,
                                   "lease_seconds": s.lease_seconds, "stall_seconds": s.stall_seconds}
        log(f"{self.n} contacts loaded in {self.result['load_s']} s; starting workers")
        env = {**os.environ, "DATABASE_URL": db_url, "BROKER_URL": REDIS_URL, "SMTP_URL": s.smtp_url,
               "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
        self.proc = start_workers(self.args, env, RESULTS / f"email_campaign-{self.stamp}-workers.log")
        wait_ready(self.rds, self.proc, self.args.processes, min(self.deadline, time.monotonic() + 120))
        self.children = spawned_children(self.proc.pid)
        self.idle_rss = [proc_kib(pid, "VmRSS") or 0 for pid in self.children]
        self.sampler = Sampler(self.proc.pid, self.rds, self.sink)
        self.sampler.start()
        time.sleep(0.5)
        self.sampler.reset_redis_baseline()
        log(f"workers ready ({self.children})")

    def campaign(self) -> None:
        """Create the campaign (send_at = now) and drive it to completion; the project's figures."""
        if self.args.profile:
            self.profilers = start_profilers(self.children, self.stamp)
        sink_before = self.sink.count()
        if self.args.wait_quiet:
            log(f"waiting up to {self.args.wait_quiet:.0f} s for a quiet machine")
            self.result["machine_busy_share_before"] = wait_quiet(min(self.args.wait_quiet, self.deadline - time.monotonic()))
        self.result["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
        cpu_before = cpu_snapshot()
        t_create = time.monotonic()
        with self.app.sessions.begin() as session:
            self.campaign_id = campaign_service.create(session, payload(), 1).id
        try:
            marks = drive(self.app, self.campaign_id, t_create, self.deadline)
        except BaseException as exc:
            marks = {"status": "timeout" if isinstance(exc, TimeoutError) else "interrupted",
                     "final_s": time.monotonic() - t_create}
            raise
        finally:
            elapsed, sent_by_then = marks["final_s"], self.sink.count() - sink_before
            cpu = cpu_by_role(cpu_before, cpu_snapshot(), time.monotonic() - t_create, self.proc.pid, self.sink.proc.pid)
            for spy, _ in self.profilers:
                spy.send_signal(signal.SIGINT)
            time.sleep(0.6)  # one more sample of every worker
            self.sampler.stop.set()
            self.sampler.join()
            stop_workers(self.proc)  # first: after a timeout they are still sending
            self.sent_at_sink = sent = self.sink.count(settle=0.3) - sink_before
            series, peak = self.sampler.sink_series, self.sampler.redis_peak - self.sampler.redis_base
            self.result["project"] = {
                "status": marks["status"], "seconds": round(elapsed, 2), "messages_per_s": round(sent_by_then / elapsed),
                "steady_messages_per_s": steady_rate(series, sink_before, self.n),
                "phases_s": dict(sorted(({k: round(v, 2) for k, v in marks.items() if k.endswith("_s")}
                                         | sink_marks(series, sink_before, self.n, t_create)).items(), key=lambda kv: kv[1])),
                "sink_received": sent,
                "worker_idle_rss_mib": [round(v / 1024, 1) for v in self.idle_rss],
                "worker_peak_rss_mib": [round(v / 1024, 1) for v in self.sampler.hwm.values()],
                "worker_processes_seen": len(self.sampler.hwm),
                "redis_peak_growth_mib": round(peak / 2**20, 3),
                "redis_peak_delivery_queue": self.sampler.queue_peak,
                "cpu_seconds": cpu,
                # Less sensitive than the rate to other jobs on the machine: compare changes with it.
                "worker_cpu_ms_per_message": round(cpu.get("workers", 0) * 1000 / max(sent, 1), 3),
                "postgres_cpu_ms_per_message": round(cpu.get("postgres", 0) * 1000 / max(sent, 1), 3),
            }
            for spy, path in self.profilers:
                spy.wait(30)
                if path.exists():
                    self.result.setdefault("profile_gil_share_pct", {})[path.name] = summarize_profile(path)
        log(f"campaign {marks['status']} in {elapsed:.1f} s")

    def prepare_raw(self) -> None:
        """Pre-build messages for the raw runs: the campaign's own, from a draft copy of it."""
        with self.app.sessions.begin() as session:
            draft = campaign_service.create(session, payload(approved=False), 1).id
        count = min(self.n, 2000)
        self.mails, self.result["per_message_cpu_in_bench_process"] = prebuilt(self.app, draft, count)
        self.result["raw"] = {"connections": self.args.raw_connections, "distinct_messages": count, "runs": []}

    def raw(self, when: str) -> None:
        """N pre-built messages with bare aiosmtplib. Run before and after the campaign: one short
        burst swings with what else the machine does, the mean of two swings less."""
        log(f"raw aiosmtplib run ({when} the campaign)")
        before = self.sink.count()
        seconds = asyncio.run(asyncio.wait_for(raw_send(self.sink.port, self.mails, self.n, self.args.raw_connections),
                                               max(1.0, self.deadline - time.monotonic())))
        raw = self.result["raw"]
        raw["runs"].append({"when": when, "seconds": round(seconds, 2), "messages_per_s": round(self.n / seconds),
                            "sink_received": self.sink.count(settle=0.3) - before})
        rates = [self.n / r["seconds"] for r in raw["runs"]]
        raw["messages_per_s"] = round(sum(rates) / len(rates))
        if "project" in self.result:
            self.result["ratio_project_to_raw"] = round(self.n / self.result["project"]["seconds"] / raw["messages_per_s"], 3)

    def check(self) -> bool:
        """The ledger holds N sent rows and N archived messages; the sink got N twice (project, raw)."""
        with self.app.sessions() as session:
            ledger = dict(session.execute(select(Recipient.status, func.count())
                                          .where(Recipient.campaign_id == self.campaign_id)
                                          .group_by(Recipient.status)).all())
            archived = session.scalar(select(func.count()).select_from(CampaignMessage)
                                      .where(CampaignMessage.campaign_id == self.campaign_id))
            total_sent = session.get(Campaign, self.campaign_id).total_sent
        n, project = self.n, self.result["project"]
        checks = {"ledger": ledger, "archived_messages": archived, "total_sent": total_sent,
                  "all_sent": ledger == {"sent": n} and total_sent == n and archived == n,
                  "sink_got_each_once": self.sent_at_sink == n
                  and all(r["sink_received"] == n for r in self.result["raw"]["runs"])}
        self.result["checks"] = checks
        self.result["targets_met"] = {
            "ratio_project_to_raw >= 0.35": self.result["ratio_project_to_raw"] >= TARGETS["ratio_project_to_raw"],
            "worker peak RSS <= 250 MiB": max(project["worker_peak_rss_mib"]) <= TARGETS["worker_peak_rss_mib"],
            "Redis growth <= 64 MiB": project["redis_peak_growth_mib"] <= TARGETS["redis_peak_growth_mib"],
        }
        return checks["all_sent"] and checks["sink_got_each_once"] and project["status"] == "completed"

    def close(self) -> None:
        """Stop what was started, drop the database, flush the Redis db (each step on its own)."""
        steps = [lambda: self.sampler and self.sampler.stop.set(), lambda: self.proc and stop_workers(self.proc),
                 lambda: self.sink and self.sink.stop(), lambda: self.app and self.app.close(), self._drop,
                 self.rds.flushdb, lambda: shutil.rmtree(self.workdir, ignore_errors=True)]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - go on with the other cleanups
                log(f"cleanup failed: {type(exc).__name__}: {exc}")

    def kill(self) -> None:
        """Last resort of the hard watchdog: the processes this run started."""
        for p in (self.proc, self.sink and self.sink.proc):
            if p is not None and p.poll() is None:
                p.kill()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))
        self.admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--raw-connections", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1200, help="watchdog: stop everything after this (s)")
    parser.add_argument("--profile", action="store_true", help="py-spy record each worker process while sending")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S s for the machine to be under 25%% busy (others' jobs skew the figures)")
    args = parser.parse_args()
    tuning = {k: os.environ[k] for k in TUNING if k in os.environ}
    if "BENCH_REDIS_URL" in os.environ and "@" not in REDIS_URL:  # never print a password
        tuning["BENCH_REDIS_URL"] = REDIS_URL
    reproduce = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in tuning.items()),
                          ".venv/bin/python benchmarks/email_campaign.py", f"--recipients {args.recipients}",
                          f"--processes {args.processes} --threads {args.threads}",
                          f"--raw-connections {args.raw_connections}", *(["--profile"] if args.profile else []),
                          *([f"--wait-quiet {args.wait_quiet:g}"] if args.wait_quiet else [])])
    configure_logging("json", "WARNING")
    binary = ensure_smtp_sink()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    run = Run(args, stamp)
    run.result.update({"benchmark": "email_campaign", "recipients": args.recipients, "processes": args.processes,
                       "threads": args.threads, "tuning_env": tuning, "reproduce": reproduce,
                       "git": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                             capture_output=True, text=True, check=False).stdout.strip()})
    # A hard stop in case the main thread hangs where the deadline checks cannot reach.
    hard = threading.Timer(args.timeout + 120, lambda: (run.kill(), os._exit(3)))
    hard.daemon = True
    hard.start()
    ok = False
    try:
        run.setup(binary)
        run.prepare_raw()
        run.raw("before")
        run.campaign()
        run.raw("after")
        ok = run.check()
    except TimeoutError as exc:
        run.result["error"] = f"watchdog: not done after {args.timeout:.0f} s ({exc})"
    except Exception as exc:
        run.result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run.close()
        hard.cancel()
        run.result["wall_s"] = round(time.monotonic() - started, 1)
        out = RESULTS / f"email_campaign-{args.recipients}-{stamp}.json"
        out.write_text(json.dumps(run.result, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps(run.result, indent=2, ensure_ascii=False))
        print(summary(run.result))
        print(f"saved: {out.relative_to(ROOT)}\nreproduce: {reproduce}")
    return 0 if ok else (3 if "watchdog" in run.result.get("error", "") else 1)


def summary(r: dict) -> str:
    """The headline figures in a few lines."""
    p, raw = r.get("project", {}), r.get("raw", {})
    lines = [f"\n== email campaign, {r['recipients']} recipients, {r['processes']} worker processes x {r['threads']} threads"]
    if p:
        lines.append(f"project: {p['messages_per_s']} msg/s send_at -> {p['status']} in {p['seconds']} s "
                     f"(steady {p['steady_messages_per_s']} msg/s); worker peak RSS {p['worker_peak_rss_mib']} MiB; "
                     f"Redis peak growth {p['redis_peak_growth_mib']} MiB")
        cpu = p["cpu_seconds"]
        lines.append(f"cpu-s: workers {cpu.get('workers')} ({p['worker_cpu_ms_per_message']} ms/message), postgres "
                     f"{cpu.get('postgres')}, everything else {cpu['everything else']} "
                     f"(machine busy {cpu['machine busy']} of {cpu['machine capacity']})")
    if "ratio_project_to_raw" in r:
        runs = ", ".join(f"{x['when']} {x['messages_per_s']}" for x in raw["runs"])
        lines.append(f"raw aiosmtplib, {raw['connections']} connections: {raw['messages_per_s']} msg/s ({runs}); "
                     f"ratio project/raw {r['ratio_project_to_raw']}")
    for name, met in r.get("targets_met", {}).items():
        lines.append(f"target {name}: {'met' if met else 'NOT met'}")
    if "checks" in r:
        lines.append(f"checks: all sent {r['checks']['all_sent']}, sink got each once {r['checks']['sink_got_each_once']}")
    if "error" in r:
        lines.append(f"error: {r['error']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
