"""Benchmark: several "machines" on one PostgreSQL and one Redis: worker supervisors and schedulers.

Three ``campaign-dispatch worker --processes 1 --threads 4`` supervisors and two ``campaign-dispatch
scheduler`` processes run as separate subprocesses, each with a hostname of its own, as machines would
run them: each in a Linux UTS namespace of its own (``unshare --uts``, as root), where ``hostname`` is
set before the command starts, so its log lines carry that ``host``. Without namespaces (not root, the
kernel refuses, or ``--no-namespaces``) they share this machine's hostname and are told apart by their
process ids (the result says which). Each names its database and Redis connections after its host
(``application_name``, ``client_name``), so they are counted per machine. They share a fresh PostgreSQL
database of N contacts, Redis db 11 (refused when it holds keys or has clients this run did not make;
flushed at the end) and one smtp-sink. An
``execute_now`` email campaign (the email benchmark's message) is created and timed to ``completed``;
the schedulers claim it, the workers fan it out, deliver and finalise it; this script only watches.

Who sent what: every ``deliver.batch`` log line of the workers (JSON, LOG_LEVEL=INFO) says how many
recipients that batch sent, with the ``host`` and ``pid`` of the process; the ledger records no
worker. Each supervisor's share is the sum of its lines' ``sent``; the shares must add up to the
ledger's ``sent`` rows, and every line must carry the host (or a pid) of the supervisor whose log
holds it. The schedulers log at DEBUG, where APScheduler writes a line per tick: that shows both
ticking, and their ``campaign.claimed`` / ``campaign.progress`` / ``campaign.finalised`` lines what
each did.

Checks: the campaign completed; the ledger holds N ``sent`` rows for N distinct contacts and N archived
messages; the sink received N messages; the shares add up to N and each is within 20% of their mean;
the campaign was claimed once, fanned out once and finalised once; each scheduler ticked during the
campaign; no line at level error. Also reported: msg/s, CPU seconds per role, peak RSS per process,
peak database connections and Redis clients per machine, PostgreSQL bytes per recipient
(``pg_total_relation_size`` of ``recipients``, and of ``campaign_messages`` where the schema still has
that table, over N; as left and after VACUUM FULL) with the schema revision, the WAL written (cluster
wide: other databases' writes count too), and Redis bytes per queued delivery message (``MEMORY
USAGE`` of Dramatiq's delivery hash and list at their fullest).

    .venv/bin/python benchmarks/many_machines.py                        # 30,000 recipients
    .venv/bin/python benchmarks/many_machines.py --recipients 10000
    DELIVERY_BATCH_SIZE=100 .venv/bin/python benchmarks/many_machines.py   # tuning variables pass through

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres), BENCH_MANY_REDIS_URL
(redis://127.0.0.1:6379/11). Worker tuning variables (DELIVERY_BATCH_SIZE, SMTP_POOL_SIZE, ...) and
Dramatiq's ``dramatiq_queue_prefetch`` are passed on and recorded. Exit status: 0 when every check
held, 1 otherwise (a watchdog stop, smtp-sink missing, a Redis db in use included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import func, inspect, select, text  # noqa: E402

from benchmarks.email_campaign import bundle, contact_line, payload  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    RESULTS, TICK, BenchDatabase, Sink, cleanup, cpu_by_role, cpu_snapshot, drive, end_summary, ensure_smtp_sink,
    git_describe, load_contacts, log, machine_before, phases, proc_kib, recorded, redis_db_is_ours, reproduce_command,
    spawned_children, steady_rate, stop_workers, tuning_env)
from storage.migrate import upgrade  # noqa: E402
from storage.models import Campaign, Recipient  # noqa: E402
from worker.pipeline import campaign_service  # noqa: E402
from worker.pipeline.app import App  # noqa: E402
from worker.pipeline.presence import workers_alive  # noqa: E402
from worker.runtime.broker import NAMESPACE  # noqa: E402
from worker.runtime.logging import configure_logging  # noqa: E402
from worker.runtime.settings import Settings  # noqa: E402

REDIS_URL = os.environ.get("BENCH_MANY_REDIS_URL", "redis://127.0.0.1:6379/11")
QUEUE, MESSAGES = f"{NAMESPACE}:delivery", f"{NAMESPACE}:delivery.msgs"  # Dramatiq's ids list and bodies hash
TOLERANCE = 0.20  # each supervisor's share within 20% of the mean
MILLION = 1_000_000


# ----------------------------------------------------------------------------- machines
@dataclass
class Machine:
    """One role run as a machine would run it: a subprocess with a hostname of its own and a log file."""

    role: str  # "worker" or "scheduler"
    host: str
    log_path: Path
    proc: subprocess.Popen | None = None
    pids: set[int] = field(default_factory=set)  # every process of it seen while sampling
    hwm_kib: dict[int, int] = field(default_factory=dict)

    def current_pids(self) -> list[int]:
        """The command's process and, for ``worker --processes P > 1``, its worker processes."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *spawned_children(self.proc.pid)]

    def lines(self) -> list[dict]:
        """The JSON lines of its log (anything else it printed is skipped)."""
        out = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return out


def uts_namespaces(wanted: bool = True) -> tuple[bool, str]:
    """Whether each process can get a hostname of its own (a UTS namespace), and how or why not."""
    if not wanted:
        return False, "--no-namespaces: this machine's hostname for all; hosts told apart by process id"
    if os.geteuid() != 0:
        return False, "not root: unshare --uts needs CAP_SYS_ADMIN; hosts told apart by process id"
    if shutil.which("unshare") is None:
        return False, "no unshare (util-linux); hosts told apart by process id"
    probe = subprocess.run(["unshare", "--uts", "hostname", "cd-probe"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return False, f"unshare --uts refused ({probe.stderr.strip()}); hosts told apart by process id"
    return True, "a UTS namespace per machine (unshare --uts), its hostname set before the command starts"


def launch(machine: Machine, argv: list[str], env: dict[str, str], uts: bool) -> None:
    """Start ``campaign-dispatch <argv>`` for ``machine``, in a session (process group) of its own."""
    cmd = [str(Path(sys.executable).with_name("campaign-dispatch")), *argv]
    if uts:
        # unshare and sh exec in turn: the command keeps the pid Popen gives, so stopping it stops it.
        cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', machine.host, *cmd]
    machine.proc = subprocess.Popen(cmd, env=env, cwd=ROOT,
                                    stdout=machine.log_path.open("ab"), stderr=subprocess.STDOUT,
                                    start_new_session=True)


def named(url: str, key: str, name: str) -> str:
    """``url`` with ``key=name`` in its query (PostgreSQL's application_name, Redis's client_name)."""
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), (key, name)])
    return urlunsplit(parts._replace(query=query))


def wait_machines_ready(machines: list[Machine], rds: redis.Redis, consumers: int, deadline: float) -> None:
    """Every worker process has fetched from Redis (Dramatiq's heartbeats) and every scheduler has ticked."""
    schedulers = [m for m in machines if m.role == "scheduler"]
    while True:
        for m in machines:
            if m.proc is None or m.proc.poll() is not None:
                raise RuntimeError(f"{m.role} {m.host} exited with {m.proc and m.proc.returncode} (see {m.log_path})")
        ticked = all(any(_is_tick(x) for x in m.lines()) for m in schedulers)
        if rds.zcard(f"{NAMESPACE}:__heartbeats__") >= consumers and ticked:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("workers or schedulers not ready")
        time.sleep(0.2)


def _is_tick(line: dict) -> bool:
    """APScheduler's line after a tick ran (an INFO record of ``apscheduler``, shown at LOG_LEVEL=DEBUG only)."""
    return str(line.get("event", "")).endswith("executed successfully")


# ----------------------------------------------------------------------------- sampler
class Sampler(threading.Thread):
    """Every 0.2 s: the sink's counter; each machine's processes and their peak RSS (VmHWM); Redis
    memory and Dramatiq's delivery queue at its fullest; database connections and Redis clients."""

    def __init__(self, machines: list[Machine], rds: redis.Redis, sink: Sink, app: App, db_name: str) -> None:
        super().__init__(daemon=True, name="sampler")
        self.machines, self.rds, self.sink, self.app, self.db_name = machines, rds, sink, app, db_name
        self.stop = threading.Event()
        self.sink_series: list[tuple[float, int]] = []
        self.redis_base = self.redis_peak = rds.info("memory")["used_memory"]
        self.queue_fullest: dict = {"messages": 0}
        # Peak connections per name: each machine names its own (application_name, client_name).
        self.db_connections: dict[str, int] = {}
        self.redis_clients: dict[str, int] = {}
        self._db = int(rds.connection_pool.connection_kwargs.get("db", 0))

    def run(self) -> None:
        rounds = 0
        while not self.stop.wait(0.2):
            self.sink_series.append((time.monotonic(), self.sink.count()))
            for m in self.machines:
                for pid in m.current_pids():
                    m.pids.add(pid)
                    hwm = proc_kib(pid, "VmHWM")
                    if hwm is not None:
                        m.hwm_kib[pid] = max(m.hwm_kib.get(pid, 0), hwm)
            try:
                self._redis()
                if rounds % 5 == 0:  # once a second: these ask more of the servers
                    self._connections()
            except (redis.RedisError, OSError) as exc:
                log(f"sampler: {type(exc).__name__}: {exc}")
            rounds += 1

    def _redis(self) -> None:
        self.redis_peak = max(self.redis_peak, self.rds.info("memory")["used_memory"])
        held = self.rds.hlen(MESSAGES)  # the bodies stay in the hash until acked: every outstanding message
        if held > self.queue_fullest["messages"]:
            self.queue_fullest = {"messages": held, "hash_bytes": self.rds.memory_usage(MESSAGES, samples=0) or 0,
                                  "ids_list_bytes": self.rds.memory_usage(QUEUE, samples=0) or 0,
                                  "ids_listed": self.rds.llen(QUEUE),
                                  "used_memory_growth": self.rds.info("memory")["used_memory"] - self.redis_base}
            one = next(iter(self.rds.hscan(MESSAGES, count=1)[1].values()), b"")
            self.queue_fullest["message_body_bytes"] = len(one)

    def _connections(self) -> None:
        names = Counter(c.get("name") or "unnamed" for c in self.rds.client_list() if int(c.get("db", -1)) == self._db)
        with self.app.autocommit.connect() as conn:
            names_pg = Counter(dict(conn.execute(text(
                "SELECT coalesce(nullif(application_name, ''), 'unnamed'), count(*) FROM pg_stat_activity "
                "WHERE datname = :d GROUP BY 1"), {"d": self.db_name}).all()))
        for peaks, now in ((self.redis_clients, names), (self.db_connections, names_pg)):
            for name, count in now.items():
                peaks[name] = max(peaks.get(name, 0), int(count))
            peaks["all at once"] = max(peaks.get("all at once", 0), sum(now.values()))


# ----------------------------------------------------------------------------- reading the logs
def iso_s(stamp: str) -> float:
    """A log line's ISO UTC timestamp as unix seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def owner_of(line: dict, machines: list[Machine], by_host: bool) -> Machine | None:
    """The machine a line says it came from: by its ``host``, or by its ``pid`` without namespaces."""
    if by_host:
        return next((m for m in machines if m.host == line.get("host")), None)
    return next((m for m in machines if line.get("pid") in m.pids), None)


def worker_report(workers: list[Machine], campaign_id: str, by_host: bool, t0_wall: float) -> dict:
    """Per worker supervisor, from the ``deliver.batch`` lines (attributed by host or pid): batches,
    sent, failed, skipped, the first and last batch (s from send_at); its fan-outs and finalisations;
    and the lines whose host or pid is not of the supervisor whose log holds them."""
    report = {m.host: {"batches": 0, "sent": 0, "failed": 0, "skipped": 0, "retrying": 0, "dispatch_done": 0,
                       "dispatch_skipped": 0, "finalised": 0, "warnings": 0, "errors": 0} for m in workers}
    misattributed, times = 0, {m.host: [] for m in workers}
    for m in workers:
        for line in m.lines():
            level, event = line.get("level"), line.get("event")
            r = report[m.host]
            r["warnings"] += level == "warning"
            r["errors"] += level in ("error", "critical")
            if line.get("campaign_id") != campaign_id:
                continue
            if event == "deliver.batch":
                if owner_of(line, workers, by_host) is not m:
                    misattributed += 1
                    continue
                r["batches"] += 1
                for key in ("sent", "failed", "skipped", "retrying"):
                    r[key] += int(line.get(key, 0))
                times[m.host].append(iso_s(line["timestamp"]) - t0_wall)
            r["dispatch_done"] += event == "dispatch.done"
            r["dispatch_skipped"] += event == "dispatch.skipped"
            r["finalised"] += event == "campaign.finalised"
    for host, seen in times.items():
        if seen:
            report[host]["batches_s"] = [round(min(seen), 2), round(max(seen), 2)]
    return {"per_supervisor": report, "misattributed_lines": misattributed}


def shares(per_supervisor: dict, tolerance: float) -> dict:
    """Each supervisor's sent recipients, the mean and each one's deviation from it (%)."""
    sent = {host: r["sent"] for host, r in per_supervisor.items()}
    mean = sum(sent.values()) / max(len(sent), 1)
    deviation = {host: round(100 * (v - mean) / mean, 1) if mean else -100.0 for host, v in sent.items()}
    within = bool(mean) and all(abs(d) <= 100 * tolerance for d in deviation.values())
    return {"sent": sent, "mean": round(mean, 1), "deviation_pct": deviation, "limit_pct": round(100 * tolerance),
            "within_limit": within}


def scheduler_report(schedulers: list[Machine], campaign_id: str, window: tuple[float, float]) -> dict:
    """Per scheduler: ticks (all, and while the campaign was in flight), what it logged for the campaign."""
    report = {}
    for m in schedulers:
        r = {"ticks": 0, "ticks_during_campaign": 0, "claimed": 0, "progress_lines": 0, "finalised": 0,
             "reconcile_lines": 0, "tick_failed": 0, "errors": 0}
        for line in m.lines():
            event = str(line.get("event", ""))
            r["errors"] += line.get("level") in ("error", "critical")
            r["tick_failed"] += event == "scheduler.tick_failed"
            if _is_tick(line):
                r["ticks"] += 1
                r["ticks_during_campaign"] += window[0] <= iso_s(line["timestamp"]) <= window[1]
            if line.get("campaign_id") == campaign_id:
                r["claimed"] += event == "campaign.claimed"
                r["progress_lines"] += event == "campaign.progress"
                r["finalised"] += event == "campaign.finalised"
                r["reconcile_lines"] += event.startswith("reconcile.")
        report[m.host] = r
    return report


# ----------------------------------------------------------------------------- CPU, storage
def cpu_per_machine(before: tuple, after: tuple, machines: list[Machine]) -> dict[str, float]:
    """CPU seconds of each machine's process tree between two ``cpu_snapshot``s (cpu_by_role counts one tree)."""
    procs0, procs1 = before[1], after[1]
    roots = {m.proc.pid: m.host for m in machines if m.proc is not None}

    def root_of(pid: int) -> str | None:
        seen = set()
        while pid in procs1 and pid not in seen:
            if pid in roots:
                return roots[pid]
            seen.add(pid)
            pid = procs1[pid][1]
        return None

    used = dict.fromkeys(roots.values(), 0)
    for pid, (jiffies, _, _) in procs1.items():
        host = root_of(pid)
        if host is not None:
            used[host] += max(0, jiffies - procs0.get(pid, (0,))[0])
    return {host: round(j / TICK, 1) for host, j in used.items()}


def wal_lsn(app: App) -> str:
    with app.autocommit.connect() as conn:
        return conn.scalar(text("SELECT pg_current_wal_lsn()::text"))


def archive_table(app: App) -> str:
    """Where the content sent is archived: ``campaign_messages`` (schema 0006 and before) or the
    ledger's own ``recipients.content`` (a later schema)."""
    return "campaign_messages" if inspect(app.engine).has_table("campaign_messages") else "recipients"


def archived_count(app: App, campaign_id: str) -> int:
    """The campaign's archived messages, in whichever table the schema keeps them."""
    table = archive_table(app)
    extra = " AND content IS NOT NULL" if table == "recipients" else ""
    with app.sessions() as session:
        return int(session.scalar(text(f"SELECT count(*) FROM {table} WHERE campaign_id = :c{extra}"),
                                  {"c": campaign_id}))


def storage_figures(app: App, n: int, wal_before: str) -> dict:
    """PostgreSQL bytes per recipient (the ledger and, where the schema has it, the archive table), as
    the campaign left the tables and after VACUUM FULL (the live rows: what the next campaigns' space is
    reused down to), the WAL written since ``wal_before``, and the schema revision measured."""
    per_campaign = tuple(dict.fromkeys(("recipients", archive_table(app))))
    size = text("SELECT pg_total_relation_size(CAST(:t AS regclass))")
    with app.autocommit.connect() as conn:
        wal = int(conn.scalar(text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:b AS pg_lsn))"),
                              {"b": wal_before}))
        revision = conn.scalar(text("SELECT version_num FROM alembic_version"))
        content = conn.scalar(text(f"SELECT avg(octet_length(content)) FROM {per_campaign[-1]}"))
        left = {t: int(conn.scalar(size, {"t": t})) for t in (*per_campaign, "contacts")}
        for t in left:
            conn.execute(text(f"VACUUM (FULL, ANALYZE) {t}"))
        compact = {t: int(conn.scalar(size, {"t": t})) for t in left}

    def per_recipient(sizes: dict[str, int]) -> int:
        return round(sum(sizes[t] for t in per_campaign) / n)

    return {"schema_revision": revision, "tables_per_recipient": list(per_campaign),
            "table_bytes_after_campaign": left, "table_bytes_after_vacuum_full": compact,
            "bytes_per_recipient": per_recipient(left), "bytes_per_recipient_after_vacuum_full": per_recipient(compact),
            "bytes_per_row": {t: round(left[t] / n) for t in per_campaign},
            "contacts_bytes_per_contact": round(left["contacts"] / n),
            "archived_content_avg_bytes": round(float(content or 0)),
            "gib_per_million_recipients": round(per_recipient(left) * MILLION / 2**30, 2),
            "wal_bytes_cluster_wide": wal, "wal_bytes_per_recipient": round(wal / n)}


def redis_figures(fullest: dict, peak_growth: int, batch_size: int) -> dict:
    """Bytes per queued delivery message at the queue's fullest, and what a million recipients' fan-out
    (one message per ``batch_size`` recipients, all enqueued at once) holds in Redis."""
    held = fullest.get("messages", 0)
    if not held:
        return {"queue_fullest": fullest}
    per_message = (fullest["hash_bytes"] + fullest["ids_list_bytes"]) / held
    messages = MILLION / batch_size
    # used_memory's growth is recorded too, but moves with client buffers more than with 150 messages.
    return {"queue_fullest": fullest, "bytes_per_queued_message": round(per_message),
            "peak_used_memory_growth_kib": round(peak_growth / 1024),
            "messages_per_million_recipients": round(messages),
            "mib_per_million_recipients": round(per_message * messages / 2**20, 2)}


# ----------------------------------------------------------------------------- the run
class Run:
    """One run: what it started (stopped in ``close``) and the figures so far."""

    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        self.args, self.n, self.stamp = args, args.recipients, stamp
        self.deadline = time.monotonic() + args.timeout
        self.db = BenchDatabase("many")
        self.rds = redis.Redis.from_url(REDIS_URL, client_name="benchmark")
        self.owns_redis = False  # flushed at the end only once it was found unused and empty
        self.workdir = Path(tempfile.mkdtemp(prefix="cd-bench-many-"))
        self.result: dict = {}
        self.app: App | None = None
        self.sink: Sink | None = None
        self.sampler: Sampler | None = None
        self.uts, self.result["hostnames"] = uts_namespaces(not args.no_namespaces)
        log_name = f"many_machines-{stamp}"
        self.workers = [Machine("worker", f"cd-worker-{i + 1}", RESULTS / f"{log_name}-cd-worker-{i + 1}.log")
                        for i in range(args.supervisors)]
        self.schedulers = [Machine("scheduler", f"cd-scheduler-{i + 1}",
                                   RESULTS / f"{log_name}-cd-scheduler-{i + 1}.log") for i in range(args.schedulers)]
        self.machines = [*self.workers, *self.schedulers]

    def claim_redis(self) -> None:
        """Refuse a Redis db with other clients or any key: this run flushes it at the end."""
        redis_db_is_ours(self.rds)
        keys = self.rds.dbsize()
        if keys:
            raise RuntimeError(f"{REDIS_URL} holds {keys} keys this run did not make: use another db "
                               "(BENCH_MANY_REDIS_URL) or flush it yourself if it is yours")
        self.owns_redis = True

    def setup(self, binary: str) -> None:
        """Database with N contacts, an empty Redis db, smtp-sink, ready workers and ticking schedulers."""
        self.claim_redis()
        db_url = self.db.create()
        self.sink = Sink(binary)
        self.app = App(Settings(database_url=named(db_url, "application_name", "benchmark"), broker_url=REDIS_URL,
                                log_level="WARNING", log_format="json",
                                smtp_url=f"smtp://127.0.0.1:{self.sink.port}"))
        upgrade(self.app.engine)
        self.result["load_s"] = round(load_contacts(self.app, self.n, self.workdir, contact_line, bundle), 1)
        s = self.app.settings
        self.batch_size = s.delivery_batch_size
        prefetch = os.environ.get("dramatiq_queue_prefetch", f"default: 2 x threads = {2 * self.args.threads}")
        self.result["settings"] = {"delivery_batch_size": s.delivery_batch_size, "smtp_pool_size": s.smtp_pool_size,
                                   "db_pool_size": s.db_pool_size, "scheduler_interval": self.args.scheduler_interval,
                                   "dramatiq_queue_prefetch": prefetch}
        log(f"{self.n} contacts loaded in {self.result['load_s']} s; starting {len(self.workers)} worker supervisors "
            f"and {len(self.schedulers)} schedulers ({'UTS namespaces' if self.uts else 'no namespaces'})")
        env = {**os.environ, "DATABASE_URL": db_url, "BROKER_URL": REDIS_URL, "SMTP_URL": s.smtp_url,
               "LOG_FORMAT": "json", "SCHEDULER_INTERVAL": f"{self.args.scheduler_interval:g}"}
        for name in ("DKIM_KEYS_DIR", "METRICS_PORT", "SEND_RATE"):  # none of these is measured here
            env.pop(name, None)
        for m in self.machines:  # each machine names its connections, so the sampler can count them apart
            env_m = {**env, "DATABASE_URL": named(db_url, "application_name", m.host),
                     "BROKER_URL": named(REDIS_URL, "client_name", m.host)}
            if m.role == "worker":  # INFO: one deliver.batch line per batch, with its host and pid
                launch(m, ["worker", "--processes", str(self.args.processes), "--threads", str(self.args.threads)],
                       {**env_m, "LOG_LEVEL": "INFO"}, self.uts)
            else:  # DEBUG: APScheduler's line per tick shows each scheduler at work
                launch(m, ["scheduler"], {**env_m, "LOG_LEVEL": "DEBUG"}, self.uts)
        wait_machines_ready(self.machines, self.rds, len(self.workers) * self.args.processes,
                            min(self.deadline, time.monotonic() + 120))
        alive = workers_alive(REDIS_URL) or []
        self.result["status_sees_workers"] = sorted(f"{w['host']}:{w['pid']}" for w in alive)
        self.sampler = Sampler(self.machines, self.rds, self.sink, self.app, self.db.name)
        self.sampler.start()
        time.sleep(0.5)
        log("workers and schedulers ready: " + ", ".join(f"{m.host} pid {m.proc.pid}" for m in self.machines))

    def campaign(self) -> None:
        """Create the campaign (send_at = now) and watch it to completion; the figures of the run."""
        sink_before = self.sink.count()
        machine_before(self.result, self.args.wait_quiet, self.deadline)
        wal_before = wal_lsn(self.app)
        cpu_before = cpu_snapshot()
        t_create, self.t0_wall = time.monotonic(), time.time()
        with self.app.sessions.begin() as session:
            self.campaign_id = campaign_service.create(session, payload(), 1).id
        try:  # no jobs run here: the schedulers claim it, the workers finalise it
            marks = drive(self.app, self.campaign_id, t_create, self.deadline, lambda _app: (lambda: None))
        except BaseException as exc:
            marks = {"status": "timeout" if isinstance(exc, TimeoutError) else "interrupted",
                     "final_s": time.monotonic() - t_create}
            raise
        finally:
            self.t1_wall = time.time()
            after = cpu_snapshot()
            seconds = time.monotonic() - t_create
            self.sampler.stop.set()
            self.sampler.join()
            for m in self.machines:
                stop_workers(m.proc, f"{m.role} {m.host}")
            self.sent_at_sink = self.sink.count(settle=0.3) - sink_before
            self._figures(marks, seconds, cpu_before, after, sink_before, wal_before)
        log(f"campaign {marks['status']} in {marks['final_s']:.1f} s")

    def _figures(self, marks: dict, seconds: float, cpu_before: tuple, cpu_after: tuple, sink_before: int,
                 wal_before: str) -> None:
        elapsed, smp = marks["final_s"], self.sampler
        # cpu_by_role with no supervisor tree (-1): the sink, this process, PostgreSQL, Redis and the
        # machine's total; the machines' trees are counted here and taken out of "everything else".
        roles = cpu_by_role(cpu_before, cpu_after, seconds, -1, self.sink.proc.pid,
                            self_role="benchmark (watching, sampling)")
        per_machine = cpu_per_machine(cpu_before, cpu_after, self.machines)
        cpu = {"workers": round(sum(per_machine[m.host] for m in self.workers), 1),
               "schedulers": round(sum(per_machine[m.host] for m in self.schedulers), 1), "per_machine": per_machine,
               **{k: v for k, v in roles.items() if k != "everything else, largest"}}
        cpu["everything else"] = round(roles["everything else"] - sum(per_machine.values()), 1)
        self.result["run"] = {
            "status": marks["status"], "seconds": round(elapsed, 2),
            "messages_per_s": round(self.sent_at_sink / elapsed) if elapsed else None,
            "messages_per_s_from_claim": round(self.sent_at_sink / (elapsed - marks["claimed_s"]))
            if marks.get("claimed_s") is not None and elapsed > marks["claimed_s"] else None,
            "steady_messages_per_s": steady_rate(smp.sink_series, sink_before, self.n),
            "phases_s": phases(marks), "sink_received": self.sent_at_sink,
            "cpu_seconds": cpu,
            "worker_cpu_ms_per_message": round(cpu["workers"] * 1000 / max(self.sent_at_sink, 1), 3),
            "postgres_cpu_ms_per_message": round(cpu.get("postgres", 0) * 1000 / max(self.sent_at_sink, 1), 3),
            "peak_rss_mib": {m.host: [round(v / 1024, 1) for v in m.hwm_kib.values()] for m in self.machines},
            "pids": {m.host: sorted(m.pids) for m in self.machines},
            "db_connections_peak": dict(sorted(smp.db_connections.items())),
            "redis_clients_peak": dict(sorted(smp.redis_clients.items())),
        }
        self.result["redis"] = redis_figures(smp.queue_fullest, smp.redis_peak - smp.redis_base, self.batch_size)
        self.result["postgres"] = storage_figures(self.app, self.n, wal_before)

    def check(self) -> bool:
        """Every recipient once (ledger, archive, sink, logs), even shares, one claim, fan-out and finalise."""
        with self.app.sessions() as session:
            where = Recipient.campaign_id == self.campaign_id
            ledger = dict(session.execute(select(Recipient.status, func.count()).where(where)
                                          .group_by(Recipient.status)).all())
            contacts = session.scalar(select(func.count(func.distinct(Recipient.contact_id))).where(where))
            total_sent = session.get(Campaign, self.campaign_id).total_sent
        archived = archived_count(self.app, self.campaign_id)
        n, run = self.n, self.result["run"]
        workers = worker_report(self.workers, self.campaign_id, self.uts, self.t0_wall)
        per = workers["per_supervisor"]
        split = shares(per, self.args.tolerance)
        scheds = scheduler_report(self.schedulers, self.campaign_id, (self.t0_wall, self.t1_wall))
        self.result.update(worker_logs=workers, shares=split, scheduler_logs=scheds)
        logged = sum(r["sent"] for r in per.values())
        hosts_seen = {h.split(":")[0] for h in self.result.get("status_sees_workers", [])}
        checks = {
            "completed": run["status"] == "completed",
            "ledger_n_sent_n_distinct": ledger == {"sent": n} and contacts == n and total_sent == n,
            "archived_n": archived == n,
            "sink_received_n": self.sent_at_sink == n,
            "logged_sent_adds_up_to_n": logged == n,
            "lines_carry_their_supervisor": workers["misattributed_lines"] == 0,
            "shares_within_limit": split["within_limit"],
            "claimed_once": sum(r["claimed"] for r in scheds.values()) == 1,
            "fanned_out_once": sum(r["dispatch_done"] for r in per.values()) == 1,
            "finalised_once": sum(r["finalised"] for r in [*per.values(), *scheds.values()]) == 1,
            "every_scheduler_ticked": all(r["ticks_during_campaign"] > 0 for r in scheds.values()),
            "no_error_lines": sum(r["errors"] for r in [*per.values(), *scheds.values()]) == 0,
            "status_sees_each_host": not self.uts or hosts_seen == {m.host for m in self.workers},
        }
        self.result["ledger"] = {"statuses": ledger, "distinct_contacts": contacts, "archived_messages": archived,
                                 "total_sent": total_sent, "logged_sent": logged}
        self.result["checks"] = checks
        return all(checks.values())

    def close(self) -> None:
        """Stop what was started, drop the database, flush the Redis db if it was ours (each step on its own)."""
        steps = [lambda: self.sampler and self.sampler.stop.set()]
        steps += [lambda m=m: m.proc and stop_workers(m.proc, f"{m.role} {m.host}") for m in self.machines]
        steps += [lambda: self.sink and self.sink.stop(), lambda: self.app and self.app.close(), self.db.drop,
                  lambda: self.owns_redis and self.rds.flushdb(),
                  lambda: shutil.rmtree(self.workdir, ignore_errors=True)]
        cleanup(steps)

    def kill(self) -> None:
        """Last resort of the hard watchdog: the process groups this run started."""
        for p in [m.proc for m in self.machines] + [self.sink and self.sink.proc]:
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=30_000)
    parser.add_argument("--supervisors", type=int, default=3, help="worker supervisors, one per 'machine'")
    parser.add_argument("--schedulers", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1, help="worker processes per supervisor")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--scheduler-interval", type=float, default=1.0, help="SCHEDULER_INTERVAL of the schedulers")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest deviation of a share from the mean")
    parser.add_argument("--no-namespaces", action="store_true",
                        help="no UTS namespaces: every machine has this hostname; lines attributed by pid")
    parser.add_argument("--timeout", type=float, default=1200, help="watchdog: stop everything after this (s)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S s for the machine to be under 25%% busy")
    args = parser.parse_args()
    tuning = tuning_env() | {k: os.environ[k] for k in ("dramatiq_queue_prefetch",) if k in os.environ}
    if "BENCH_MANY_REDIS_URL" in os.environ and "@" not in REDIS_URL:  # never print a password
        tuning["BENCH_MANY_REDIS_URL"] = REDIS_URL
    reproduce = reproduce_command("many_machines.py", [
        f"--recipients {args.recipients}", f"--supervisors {args.supervisors} --schedulers {args.schedulers}",
        f"--processes {args.processes} --threads {args.threads}", f"--scheduler-interval {args.scheduler_interval:g}",
        *([f"--tolerance {args.tolerance:g}"] if args.tolerance != TOLERANCE else []),
        *(["--no-namespaces"] if args.no_namespaces else []),
        *([f"--wait-quiet {args.wait_quiet:g}"] if args.wait_quiet else [])], tuning)
    configure_logging("json", "WARNING")
    try:
        binary = ensure_smtp_sink()
    except SystemExit:
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    run = Run(args, stamp)
    run.result = {"benchmark": "many_machines", "recipients": args.recipients, "supervisors": args.supervisors,
                  "schedulers": args.schedulers, "processes": args.processes, "threads": args.threads,
                  "tuning_env": tuning, "reproduce": reproduce, "git": git_describe(), **run.result}
    # A hard stop in case the main thread hangs where the deadline checks cannot reach.
    hard = threading.Timer(args.timeout + 120, lambda: (run.kill(), os._exit(1)))
    hard.daemon = True
    hard.start()
    ok = False
    try:
        with recorded(run.result, RESULTS / f"many_machines-{args.recipients}-{stamp}.json", summary, reproduce,
                      watchdog=args.timeout, started=started, print_json=False):
            try:
                run.setup(binary)
                run.campaign()
                ok = run.check()
            finally:
                run.close()
                hard.cancel()
    except Exception:  # noqa: BLE001 - recorded (and printed) above; the exit status says it failed
        return 1
    return 0 if ok else 1


def summary(r: dict) -> str:
    """The headline figures in a few lines."""
    lines = [f"\n== many machines: {r['recipients']} recipients, {r['supervisors']} worker supervisors "
             f"({r['processes']} process x {r['threads']} threads each), {r['schedulers']} schedulers; "
             f"hostnames: {r['hostnames']}"]
    run = r.get("run")
    if run:
        lines.append(f"{run['status']} in {run['seconds']} s from send_at: {run['messages_per_s']} msg/s "
                     f"({run['messages_per_s_from_claim']} from the claim, steady {run['steady_messages_per_s']}); "
                     f"phases {run['phases_s']}")
        cpu = run["cpu_seconds"]
        lines.append(f"cpu-s: workers {cpu['workers']} ({run['worker_cpu_ms_per_message']} ms/message), schedulers "
                     f"{cpu['schedulers']}, postgres {cpu.get('postgres')}, redis {cpu.get('redis')}, smtp-sink "
                     f"{cpu.get('smtp-sink')}, everything else {cpu['everything else']} (machine busy "
                     f"{cpu['machine busy']} of {cpu['machine capacity']}); per machine {cpu['per_machine']}")
        lines.append(f"peak RSS MiB {run['peak_rss_mib']}")
        lines.append(f"peak database connections {run['db_connections_peak']}; Redis clients "
                     f"{run['redis_clients_peak']}")
    if "shares" in r:
        s = r["shares"]
        lines.append("shares: " + ", ".join(f"{h} {v} ({s['deviation_pct'][h]:+.1f}%)" for h, v in s["sent"].items())
                     + f"; mean {s['mean']}; limit {s['limit_pct']}%: {'met' if s['within_limit'] else 'NOT met'}")
        lines.append("schedulers: " + "; ".join(
            f"{h} ticked {x['ticks_during_campaign']} (of {x['ticks']}), claimed {x['claimed']}, progress lines "
            f"{x['progress_lines']}, finalised {x['finalised']}, reconcile lines {x['reconcile_lines']}"
            for h, x in r["scheduler_logs"].items()))
        per = r["worker_logs"]["per_supervisor"]
        lines.append("workers: " + "; ".join(f"{h} {x['batches']} batches, fanned out {x['dispatch_done']}, "
                                             f"finalised {x['finalised']}" for h, x in per.items()))
    pg, rd = r.get("postgres"), r.get("redis")
    if pg:
        lines.append(f"postgres (schema {pg['schema_revision']}): {pg['bytes_per_recipient']} bytes a recipient "
                     f"({' + '.join(pg['tables_per_recipient'])}; "
                     f"{pg['bytes_per_recipient_after_vacuum_full']} after VACUUM FULL): "
                     f"{pg['gib_per_million_recipients']} GiB a million; WAL {pg['wal_bytes_per_recipient']} bytes "
                     f"a recipient (cluster-wide); contacts {pg['contacts_bytes_per_contact']} bytes a contact")
    if rd and "bytes_per_queued_message" in rd:
        lines.append(f"redis: {rd['bytes_per_queued_message']} bytes a queued delivery message (fullest: "
                     f"{rd['queue_fullest']['messages']}): {rd['mib_per_million_recipients']} MiB a million "
                     f"recipients ({rd['messages_per_million_recipients']} messages)")
    if "checks" in r:
        failed = [k for k, ok in r["checks"].items() if not ok]
        lines.append("checks: " + ("all held" if not failed else "FAILED " + ", ".join(failed)))
    return end_summary(lines, r)


if __name__ == "__main__":
    sys.exit(main())
