"""Benchmark: one email campaign to N recipients through the real service, against Postfix's smtp-sink.

Creates a fresh PostgreSQL database with N contacts, checks that the Redis db is not used by anyone
else and flushes it, starts smtp-sink and ``campaign-dispatch worker --processes 2 --threads 4``
(a subprocess), runs the scheduler's jobs here every 0.5 s, creates an ``execute_now`` campaign
and times it from ``send_at`` to ``completed``. Meanwhile it samples each worker process's peak
RSS (/proc VmHWM), Redis ``used_memory`` (peak, and growth over the idle baseline) and the sink's
message counter, and counts the CPU seconds of the workers, PostgreSQL and the rest of the machine.

Fan-out is timed in Redis, polled every 10 ms: from a worker fetching the campaign's dispatch
message (its id leaves the ``campaigns`` queue, its body stays until it is acked) to its ack
(``dispatch_campaign`` returned: ledger rows inserted, every delivery batch enqueued), split where
the first delivery message appears (before: validation, the ledger's INSERT ... SELECT, reading the
batches; after: the enqueue). ``campaigns.dispatched_at`` holds whole seconds: too coarse for this.
PostgreSQL's ``pg_total_relation_size`` (heap, TOAST, indexes) of the ledger (``recipients``, which
holds the archived contents too) is read right after the fan-out (the workers are sending by then)
and after the send: bytes per recipient.

Before and after the campaign, with the workers idle or stopped, bare aiosmtplib sends K messages
(``--raw-sample``, default min(N, 100,000): a sample, so that a run of a million measures the raw
rate without sending two million more) over 10 connections to the same sink: the campaign's own,
built by the project (up to 2,000 distinct ones, cycled). That is the raw rate, and project/raw
against their mean. The workers' CPU a message is also given in raw messages (times the raw rate):
what a message costs a worker against what one takes bare aiosmtplib and the sink, so that figures
of faster and slower machines compare (0.25 ms at 5,792 msg/s, say, is 1.45). Checks: the sink got N messages from the campaign and K from each raw run, and
the ledger holds N ``sent`` rows, each archived. Prints the figures and the command that reproduces
them, and saves them as JSON in benchmarks/results/.

    .venv/bin/python benchmarks/email_campaign.py                       # 20,000 recipients
    .venv/bin/python benchmarks/email_campaign.py --recipients 100000
    .venv/bin/python benchmarks/email_campaign.py --recipients 1000000 --wait-quiet 120   # raw rate on 100,000
    .venv/bin/python benchmarks/email_campaign.py --profile             # + py-spy of each worker
    .venv/bin/python benchmarks/email_campaign.py --dkim                # + every message DKIM-signed (RSA-2048)
    .venv/bin/python benchmarks/email_campaign.py --dkim ed25519        # ... with an Ed25519 key

The watchdog (``--timeout``) defaults to 1,200 s plus 3 ms a recipient: 1,260 s for 20,000, 4,200 s
for a million (loading the contacts, two raw samples, and the campaign at no less than ~400 msg/s).

``--dkim`` makes a throwaway RSA-2048 key (``--dkim ed25519``: an Ed25519 key) for the campaign's
sending domain in the run's temporary directory and gives the workers DKIM_KEYS_DIR (without it,
DKIM_KEYS_DIR is not passed on, so the plain run never signs). The raw baseline sends the same
messages unsigned either way: it measures the relay path, and signing N messages here would take
longer than the campaign.

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres), BENCH_REDIS_URL
(redis://127.0.0.1:6379/14). Worker tuning variables (DELIVERY_BATCH_SIZE, SMTP_POOL_SIZE, ...)
are passed to the workers and recorded. Exit status: 0 when every check held, 1 when one
failed, 2 when smtp-sink is missing and cannot be installed, 3 when the watchdog (--timeout)
stopped the run. Figures skew when other jobs share the machine: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    RESULTS, BenchDatabase, Sink, WorkerSampler, cleanup, collect_profiles, cpu_by_role, cpu_snapshot, drive,
    end_summary, ensure_smtp_sink, exit_status, git_describe, load_contacts, log, machine_before, phases, proc_kib,
    recorded, redis_db_is_ours, reproduce_command, spawned_children, start_profilers, start_workers, steady_rate,
    stop_profilers, stop_workers, summarize_profile, target_lines, tuning_env, wait_ready)
from scheduler.service import run_once  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Campaign, Contact, Recipient, User  # noqa: E402
from worker.pipeline import campaign_service  # noqa: E402
from worker.pipeline.actors import CAMPAIGNS_QUEUE, DELIVERY_QUEUE  # noqa: E402
from worker.pipeline.app import App  # noqa: E402
from worker.runtime.broker import NAMESPACE  # noqa: E402
from worker.channels.campaign_runtime import build_runtime  # noqa: E402
from worker.runtime.logging import configure_logging  # noqa: E402
from worker.runtime.settings import Settings  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
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


# ----------------------------------------------------------------------------- sampler
class Sampler(WorkerSampler):
    """Every 0.2 s: worker VmHWM, Redis used_memory and queue length, the sink's counter."""

    def __init__(self, supervisor: int, rds: redis.Redis, sink: Sink) -> None:
        super().__init__(supervisor)
        self.rds, self.sink = rds, sink
        self.redis_peak = self.redis_base = rds.info("memory")["used_memory"]
        self.queue_peak = 0
        self.sink_series: list[tuple[float, int]] = []

    def reset_redis_baseline(self) -> None:
        self.redis_peak = self.redis_base = self.rds.info("memory")["used_memory"]

    def sample(self) -> None:
        try:
            self.redis_peak = max(self.redis_peak, self.rds.info("memory")["used_memory"])
            self.queue_peak = max(self.queue_peak, self.rds.llen(f"{NAMESPACE}:delivery"))
        except redis.RedisError:
            pass
        self.sink_series.append((time.monotonic(), self.sink.count()))


class FanoutWatch(threading.Thread):
    """Every 10 ms until the campaign's dispatch message is acked, the moments (time.monotonic()) a
    worker fetched it (its id left the queue, its body is still there), the first delivery message
    was queued, and it was acked (its body is gone: every batch is enqueued); then ``on_done()``."""

    def __init__(self, rds: redis.Redis, on_done: Callable[[], None]) -> None:
        super().__init__(daemon=True, name="fanout-watch")
        self.rds, self.on_done = rds, on_done
        self.marks: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        queue, deliveries = f"{NAMESPACE}:{CAMPAIGNS_QUEUE}", f"{NAMESPACE}:{DELIVERY_QUEUE}.msgs"
        seen = False
        while not self.stop.wait(0.01):
            try:
                queued, held, delivering = (self.rds.pipeline(transaction=False).llen(queue).hlen(f"{queue}.msgs")
                                            .hlen(deliveries).execute())
            except redis.RedisError:
                continue
            now = time.monotonic()
            seen = seen or held > 0
            if held and not queued:
                self.marks.setdefault("dispatch_fetched", now)
            if delivering:
                self.marks.setdefault("first_batch_queued", now)
            if seen and not held:
                self.marks.setdefault("dispatch_fetched", now)  # fetched and acked within one poll
                self.marks["dispatch_acked"] = now
                self.on_done()
                return


# The ledger, the archived contents included (storage.archive); None for a table the schema lacks.
TABLES = ("recipients",)


def table_bytes(app: App) -> dict[str, int | None]:
    """``pg_total_relation_size`` (heap, TOAST, indexes) of each of TABLES."""
    with app.sessions() as session:
        return {t: session.scalar(text("SELECT pg_total_relation_size(to_regclass(:t))"), {"t": t}) for t in TABLES}


def bytes_figures(sizes: dict[str, int | None], n: int) -> dict:
    """The sizes in MiB and, together, bytes per recipient."""
    return {**{f"{t}_mib": None if v is None else round(v / 2**20, 1) for t, v in sizes.items()},
            "bytes_per_recipient": round(sum(v or 0 for v in sizes.values()) / n),
            **{f"{t}_bytes_per_recipient": round(v / n) for t, v in sizes.items() if v is not None}}


# ----------------------------------------------------------------------------- the run
def scheduler_jobs(app: App) -> Callable[[], object]:
    """The scheduler's jobs, run once per call (``drive`` calls it every 0.5 s)."""
    enqueue, s = app.actors.enqueue(), app.settings
    return lambda: run_once(app.sessions, enqueue, lease=s.lease_seconds, stall=s.stall_seconds,
                            batch_size=s.delivery_batch_size)


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


def fanout_figures(marks: dict[str, float], n: int, batch_size: int) -> dict:
    """Fan-out seconds from FanoutWatch's marks: the whole of it, and its ledger and enqueue parts."""
    if "dispatch_acked" not in marks:
        return {}
    start, first, end = marks["dispatch_fetched"], marks.get("first_batch_queued"), marks["dispatch_acked"]
    out = {"seconds": round(end - start, 2), "batches": -(-n // batch_size), "poll_s": 0.01}
    if first is not None and start <= first <= end:
        out |= {"ledger_s": round(first - start, 2), "enqueue_s": round(end - first, 2)}
    return out


def sink_marks(series: list[tuple[float, int]], start: int, total: int, t0: float) -> dict[str, float]:
    """When the sink saw the campaign's first and last message, in seconds from ``t0``."""
    first = next((t for t, c in series if c > start), None)
    last = next((t for t, c in series if c >= start + total), None)
    return {k: round(v - t0, 2) for k, v in (("first_message_s", first), ("last_message_s", last)) if v is not None}


CATEGORIES = [  # (label, substring of a py-spy frame): the first label with a frame in the stack wins
    ("dkim signing", "renderers/dkim.py"), ("archive compression", "Packer.pack ("),
    ("render: text alternative", "renderers/plain_text.py"), ("render: contact record", "renderers/context.py"),
    ("render: jinja", "jinja2/"), ("render: jinja", "render_chunks ("), ("mime", "renderers/mime.py"),
    ("render: other (footer, unsubscribe URL)", "CampaignRuntime.email ("),
    ("sql: outcome writes", "worker/pipeline/recorder.py"), ("sql: claim", "claim (storage/ledger"),
    ("sql: load contacts", "_load_contacts ("), ("sql: campaign finished?", "finish_now ("),
    ("sql: campaign and runtime", "RuntimeCache.get ("), ("sql: campaign and runtime", "Session.get ("),
    ("recheck", "recheck ("), ("sql: other", "sqlalchemy/"),
    ("smtp: channel", "worker/channels/smtp_channel.py"), ("smtp: pool", "worker/channels/smtp.py"),
    ("smtp: aiosmtplib", "aiosmtplib/"),
    # uvloop's own work (C) is sampled in the frame that started its thread
    ("smtp: event loop", "Thread.run (threading.py"),
    ("delivery: other", "worker/pipeline/delivery.py"), ("delivery: other", "worker/channels/email.py"),
    ("broker: dramatiq + redis", "dramatiq/"),
]


def gil_shares(path: Path) -> dict[str, float]:
    """Share (%) of the GIL-holding samples per category, from py-spy's raw (collapsed stack) output."""
    return summarize_profile(path, CATEGORIES)


TARGETS = {"ratio_project_to_raw": 0.65, "worker_peak_rss_mib": 250, "redis_peak_growth_mib": 64}


class Run:
    """One benchmark run: what it started (stopped in ``close``) and the figures so far."""

    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        self.args, self.n, self.stamp = args, args.recipients, stamp
        self.raw_n = args.raw_sample
        self.deadline = time.monotonic() + args.timeout
        self.db = BenchDatabase("email")
        self.rds = redis.Redis.from_url(REDIS_URL)
        self.workdir = Path(tempfile.mkdtemp(prefix="cd-bench-"))
        self.result: dict = {}
        self.app = self.proc = self.sink = self.sampler = None
        self.profilers: list = []

    def setup(self, binary: str) -> None:
        """Database with N contacts, a flushed Redis db, smtp-sink and ready workers."""
        db_url = self.db.create()
        self.sink = Sink(binary)
        redis_db_is_ours(self.rds)
        self.rds.flushdb()
        self.app = App(Settings(database_url=db_url, broker_url=REDIS_URL, smtp_url=f"smtp://127.0.0.1:{self.sink.port}",
                                log_level="WARNING", log_format="json"))
        upgrade(self.app.engine)
        self.result["load_s"] = round(load_contacts(self.app, self.n, self.workdir, contact_line, bundle), 1)
        s = self.app.settings
        self.result["settings"] = {"delivery_batch_size": s.delivery_batch_size, "smtp_pool_size": s.smtp_pool_size,
                                   "lease_seconds": s.lease_seconds, "stall_seconds": s.stall_seconds}
        log(f"{self.n} contacts loaded in {self.result['load_s']} s; starting workers")
        env = {**os.environ, "DATABASE_URL": db_url, "BROKER_URL": REDIS_URL, "SMTP_URL": s.smtp_url,
               "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
        env.pop("DKIM_KEYS_DIR", None)
        if self.args.dkim:
            env["DKIM_KEYS_DIR"] = str(self.dkim_keys(f"acme.{s.campaign_domain_suffix}"))
        self.proc = start_workers(self.args, env, RESULTS / f"email_campaign-{self.stamp}-workers.log")
        wait_ready(self.rds, self.proc, self.args.processes, min(self.deadline, time.monotonic() + 120))
        self.children = spawned_children(self.proc.pid)
        self.idle_rss = [proc_kib(pid, "VmRSS") or 0 for pid in self.children]
        self.sampler = Sampler(self.proc.pid, self.rds, self.sink)
        self.sampler.start()
        time.sleep(0.5)
        self.sampler.reset_redis_baseline()
        log(f"workers ready ({self.children})")

    def dkim_keys(self, domain: str) -> Path:
        """A directory with a fresh key for ``domain`` (``bench.<domain>.pem``: RSA-2048, or
        ``bench.<domain>.ed25519`` with ``--dkim ed25519``), checked as the workers will load it;
        nothing is published, as the sink verifies nothing."""
        from renderers.dkim import load_keys
        from tests.dkimkeys import write_ed25519_key, write_rsa_key

        folder = self.workdir / "dkim"
        folder.mkdir(mode=0o700)
        (write_ed25519_key if self.args.dkim == "ed25519" else write_rsa_key)(folder, "bench", domain)
        self.result["dkim"] = (f"ed25519-sha256, for {domain}" if self.args.dkim == "ed25519"
                               else f"rsa-sha256, 2048 bits, for {domain}")
        assert load_keys(folder).signs(domain)
        return folder

    def campaign(self) -> None:
        """Create the campaign (send_at = now) and drive it to completion; the project's figures."""
        if self.args.profile:
            self.profilers = start_profilers(self.children, f"email_campaign-{self.stamp}", rate=200, gil=True)
        sink_before = self.sink.count()
        machine_before(self.result, self.args.wait_quiet, self.deadline)
        watch = FanoutWatch(self.rds, lambda: self.after_fanout(sink_before))
        watch.start()
        cpu_before = cpu_snapshot()
        t_create = time.monotonic()
        with self.app.sessions.begin() as session:
            self.campaign_id = campaign_service.create(session, payload(), 1).id
        try:
            marks = drive(self.app, self.campaign_id, t_create, self.deadline, scheduler_jobs)
        except BaseException as exc:
            marks = {"status": "timeout" if isinstance(exc, TimeoutError) else "interrupted",
                     "final_s": time.monotonic() - t_create}
            raise
        finally:
            watch.stop.set()
            watch.join(10)  # it may be reading the tables' sizes
            elapsed, sent_by_then = marks["final_s"], self.sink.count() - sink_before
            cpu = cpu_by_role(cpu_before, cpu_snapshot(), time.monotonic() - t_create, self.proc.pid, self.sink.proc.pid)
            stop_profilers(self.profilers)
            time.sleep(0.6)  # one more sample of every worker
            self.sampler.stop.set()
            self.sampler.join()
            stop_workers(self.proc)  # first: after a timeout they are still sending
            self.sent_at_sink = sent = self.sink.count(settle=0.3) - sink_before
            series, peak = self.sampler.sink_series, self.sampler.redis_peak - self.sampler.redis_base
            fan = {f"{k}_s": round(v - t_create, 2) for k, v in watch.marks.items()}
            self.result["project"] = {
                "status": marks["status"], "seconds": round(elapsed, 2), "messages_per_s": round(sent_by_then / elapsed),
                "steady_messages_per_s": steady_rate(series, sink_before, self.n),
                "phases_s": phases(marks, sink_marks(series, sink_before, self.n, t_create) | fan),
                "fanout": fanout_figures(watch.marks, self.n, self.app.settings.delivery_batch_size),
                "sink_received": sent,
                "worker_idle_rss_mib": [round(v / 1024, 1) for v in self.idle_rss],
                "worker_peak_rss_mib": [round(v / 1024, 1) for v in self.sampler.hwm.values()],
                "worker_processes_seen": len(self.sampler.hwm),
                "redis_peak_growth_mib": round(peak / 2**20, 3),
                "redis_peak_used_memory_mib": round(self.sampler.redis_peak / 2**20, 1),
                "redis_idle_used_memory_mib": round(self.sampler.redis_base / 2**20, 1),
                "redis_peak_delivery_queue": self.sampler.queue_peak,
                "cpu_seconds": cpu,
                # Less sensitive than the rate to other jobs on the machine: compare changes with it.
                "worker_cpu_ms_per_message": round(cpu.get("workers", 0) * 1000 / max(sent, 1), 3),
                "postgres_cpu_ms_per_message": round(cpu.get("postgres", 0) * 1000 / max(sent, 1), 3),
            }
            if "after_fanout" in self.result:
                self.result["project"]["fanout"]["postgres_after_fanout"] = self.result.pop("after_fanout")
            collect_profiles(self.profilers, self.result, "profile_gil_share_pct", gil_shares)
        log(f"campaign {marks['status']} in {elapsed:.1f} s")
        self.result["postgres_after_send"] = bytes_figures(table_bytes(self.app), self.n)

    def after_fanout(self, sink_before: int) -> None:
        """The tables' sizes as the fan-out ends (the watcher's thread); the workers are sending by then."""
        try:
            sent = self.sink.count() - sink_before
            self.result["after_fanout"] = {**bytes_figures(table_bytes(self.app), self.n), "sent_by_then": sent}
        except Exception as exc:  # noqa: BLE001 - a figure missing, not the run
            log(f"could not read the table sizes after the fan-out: {type(exc).__name__}: {exc}")

    def prepare_raw(self) -> None:
        """Pre-build messages for the raw runs: the campaign's own, from a draft copy of it."""
        with self.app.sessions.begin() as session:
            draft = campaign_service.create(session, payload(approved=False), 1).id
        count = min(self.raw_n, 2000)
        self.mails, self.result["per_message_cpu_in_bench_process"] = prebuilt(self.app, draft, count)
        self.result["raw"] = {"connections": self.args.raw_connections, "messages": self.raw_n,
                              "distinct_messages": count, "runs": []}

    def raw(self, when: str) -> None:
        """K (``--raw-sample``) pre-built messages with bare aiosmtplib. Run before and after the
        campaign: one short burst swings with what else the machine does, the mean of two swings less."""
        log(f"raw aiosmtplib run of {self.raw_n} messages ({when} the campaign)")
        before = self.sink.count()
        seconds = asyncio.run(asyncio.wait_for(raw_send(self.sink.port, self.mails, self.raw_n,
                                                        self.args.raw_connections),
                                               max(1.0, self.deadline - time.monotonic())))
        raw = self.result["raw"]
        raw["runs"].append({"when": when, "seconds": round(seconds, 2), "messages_per_s": round(self.raw_n / seconds),
                            "sink_received": self.sink.count(settle=0.3) - before})
        rates = [self.raw_n / r["seconds"] for r in raw["runs"]]
        raw["messages_per_s"] = round(sum(rates) / len(rates))
        if "project" in self.result:
            project = self.result["project"]
            self.result["ratio_project_to_raw"] = round(self.n / project["seconds"] / raw["messages_per_s"], 3)
            # The worker's CPU a message over raw aiosmtplib's wall time a message: the machine's speed
            # divided out, as in the ratio, so that days and machines compare.
            project["worker_cpu_in_raw_messages"] = round(
                project["worker_cpu_ms_per_message"] * raw["messages_per_s"] / 1000, 2)

    def check(self) -> bool:
        """The ledger holds N sent rows and N archived messages; the sink got N from the campaign and K
        from each raw run."""
        with self.app.sessions() as session:
            ledger = dict(session.execute(select(Recipient.status, func.count())
                                          .where(Recipient.campaign_id == self.campaign_id)
                                          .group_by(Recipient.status)).all())
            archived = session.scalar(select(func.count()).where(Recipient.campaign_id == self.campaign_id,
                                                                 Recipient.content.is_not(None)))
            total_sent = session.get(Campaign, self.campaign_id).total_sent
        n, project = self.n, self.result["project"]
        checks = {"ledger": ledger, "archived_messages": archived, "total_sent": total_sent,
                  "all_sent": ledger == {"sent": n} and total_sent == n and archived == n,
                  "sink_got_each_once": self.sent_at_sink == n
                  and all(r["sink_received"] == self.raw_n for r in self.result["raw"]["runs"])}
        self.result["checks"] = checks
        self.result["targets_met"] = {
            "ratio_project_to_raw >= 0.65": self.result["ratio_project_to_raw"] >= TARGETS["ratio_project_to_raw"],
            "worker peak RSS <= 250 MiB": max(project["worker_peak_rss_mib"]) <= TARGETS["worker_peak_rss_mib"],
            "Redis growth <= 64 MiB": project["redis_peak_growth_mib"] <= TARGETS["redis_peak_growth_mib"],
        }
        return checks["all_sent"] and checks["sink_got_each_once"] and project["status"] == "completed"

    def close(self) -> None:
        """Stop what was started, drop the database, flush the Redis db (each step on its own)."""
        cleanup([lambda: self.sampler and self.sampler.stop.set(), lambda: self.proc and stop_workers(self.proc),
                 lambda: self.sink and self.sink.stop(), lambda: self.app and self.app.close(), self.db.drop,
                 self.rds.flushdb, lambda: shutil.rmtree(self.workdir, ignore_errors=True)])

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--raw-connections", type=int, default=10)
    parser.add_argument("--raw-sample", type=int, metavar="K",
                        help="messages of each raw aiosmtplib run (default: min(recipients, 100000))")
    parser.add_argument("--timeout", type=float,
                        help="watchdog: stop everything after this (s; default: 1200 + 3 ms a recipient)")
    parser.add_argument("--profile", action="store_true", help="py-spy record each worker process while sending")
    parser.add_argument("--dkim", nargs="?", const="rsa", choices=["rsa", "ed25519"],
                        help="DKIM-sign every message with a throwaway key, RSA-2048 unless `--dkim ed25519` "
                             "(DKIM_KEYS_DIR for the workers)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S s for the machine to be under 25%% busy (others' jobs skew the figures)")
    args = parser.parse_args()
    args.raw_sample = args.raw_sample or min(args.recipients, 100_000)
    args.timeout = args.timeout or 1200 + 0.003 * args.recipients
    tuning = tuning_env()
    if "BENCH_REDIS_URL" in os.environ and "@" not in REDIS_URL:  # never print a password
        tuning["BENCH_REDIS_URL"] = REDIS_URL
    reproduce = reproduce_command("email_campaign.py", [
        f"--recipients {args.recipients}", f"--processes {args.processes} --threads {args.threads}",
        f"--raw-connections {args.raw_connections} --raw-sample {args.raw_sample}",
        *(["--profile"] if args.profile else []),
        *([f"--dkim {args.dkim}"] if args.dkim else []),
        *([f"--wait-quiet {args.wait_quiet:g}"] if args.wait_quiet else [])], tuning)
    configure_logging("json", "WARNING")
    binary = ensure_smtp_sink()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    run = Run(args, stamp)
    run.result.update({"benchmark": "email_campaign", "recipients": args.recipients, "processes": args.processes,
                       "threads": args.threads, "dkim": args.dkim, "tuning_env": tuning, "reproduce": reproduce,
                       "git": git_describe()})
    # A hard stop in case the main thread hangs where the deadline checks cannot reach.
    hard = threading.Timer(args.timeout + 120, lambda: (run.kill(), os._exit(3)))
    hard.daemon = True
    hard.start()
    ok = False
    with recorded(run.result, RESULTS / f"email_campaign-{args.recipients}-{stamp}.json", summary, reproduce,
                  watchdog=args.timeout, started=started):
        try:
            run.setup(binary)
            run.prepare_raw()
            run.raw("before")
            run.campaign()
            run.raw("after")
            ok = run.check()
        finally:
            run.close()
            hard.cancel()
    return exit_status(ok, run.result)


def summary(r: dict) -> str:
    """The headline figures in a few lines."""
    p, raw = r.get("project", {}), r.get("raw", {})
    lines = [f"\n== email campaign, {r['recipients']} recipients, {r['processes']} worker processes x {r['threads']} threads"
             + (f"; DKIM {r['dkim']}" if r.get("dkim") else "")]
    if p:
        lines.append(f"project: {p['messages_per_s']} msg/s send_at -> {p['status']} in {p['seconds']} s "
                     f"(steady {p['steady_messages_per_s']} msg/s); worker peak RSS {p['worker_peak_rss_mib']} MiB; "
                     f"Redis peak used_memory {p['redis_peak_used_memory_mib']} MiB "
                     f"(growth {p['redis_peak_growth_mib']} MiB over idle)")
        f = p.get("fanout", {})
        if f:
            split = (f"ledger {f['ledger_s']} s, enqueue of {f['batches']} batches {f['enqueue_s']} s"
                     if "ledger_s" in f else f"{f['batches']} batches")
            lines.append(f"fan-out: {f['seconds']} s, a worker fetching the dispatch message -> its ack ({split}; "
                         f"polled in Redis every {f['poll_s'] * 1000:.0f} ms)")
        for label, sizes in (("right after fan-out", f.get("postgres_after_fanout")),
                             ("after the send", r.get("postgres_after_send"))):
            if sizes:
                tables = ", ".join(f"{t} {sizes[t + '_mib']} MiB ({sizes[t + '_bytes_per_recipient']} B/recipient)"
                                   if sizes.get(t + "_mib") is not None else f"{t}: no such table" for t in TABLES)
                more = f"; {sizes['sent_by_then']} sent by then" if "sent_by_then" in sizes else ""
                lines.append(f"PostgreSQL {label}: {sizes['bytes_per_recipient']} bytes/recipient ({tables}{more})")
        cpu = p["cpu_seconds"]
        lines.append(f"cpu-s: workers {cpu.get('workers')} ({p['worker_cpu_ms_per_message']} ms/message), postgres "
                     f"{cpu.get('postgres')}, everything else {cpu['everything else']} "
                     f"(machine busy {cpu['machine busy']} of {cpu['machine capacity']})")
    if "ratio_project_to_raw" in r:
        runs = ", ".join(f"{x['when']} {x['messages_per_s']}" for x in raw["runs"])
        sample = raw.get("messages", r["recipients"])
        lines.append(f"raw aiosmtplib, {raw['connections']} connections, {sample} messages a run"
                     + (f" (a sample: the campaign had {r['recipients']})" if sample < r["recipients"] else "")
                     + f": {raw['messages_per_s']} msg/s ({runs}); ratio project/raw {r['ratio_project_to_raw']}; "
                     f"worker CPU a message {p.get('worker_cpu_in_raw_messages')} x raw's wall time a message")
    lines += target_lines(r.get("targets_met", {}))
    if "checks" in r:
        lines.append(f"checks: all sent {r['checks']['all_sent']}, sink got each once {r['checks']['sink_got_each_once']}")
    return end_summary(lines, r)


if __name__ == "__main__":
    sys.exit(main())
