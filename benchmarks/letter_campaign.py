"""Benchmark: one letter campaign to N recipients through the real service, into a real S3 protocol server.

Creates a fresh PostgreSQL database with N addressed contacts, flushes Redis db 14, starts moto's S3
server (``moto_server``, a subprocess on 127.0.0.1) with a fresh bucket, then
``campaign-dispatch worker --processes 2 --threads 2`` (a subprocess) with ``STORAGE_URL=s3://bucket/letters``,
runs the scheduler's jobs here every 0.5 s, creates an ``execute_now`` letter campaign and times it
from ``send_at`` to ``completed``, which includes the ZIP of all letters being built. Meanwhile it
samples each worker process's peak RSS (/proc VmHWM). Then, with the workers stopped, the raw
WeasyPrint limit: the same letters' HTML (rendered by the project's templating) laid out by
``renderers.pdf.render_batch`` 50 to a document, in this one process. Checks: the ledger holds N
``sent`` rows, the ZIP in S3 has N distinct entries, each a PDF. Prints the figures and the command to
reproduce them, and saves them as JSON in benchmarks/results/.

    .venv/bin/python benchmarks/letter_campaign.py                  # 2,000 letters
    .venv/bin/python benchmarks/letter_campaign.py --letters 500
    .venv/bin/python benchmarks/letter_campaign.py --letter short    # a lighter letter (no table, no footer)
    .venv/bin/python benchmarks/letter_campaign.py --profile         # py-spy each worker: time by package
    .venv/bin/python benchmarks/letter_campaign.py --runs 3          # three campaigns, the median reported

Letters: ``invoice`` (the default: sender, address window, an item table, a page footer) and ``short``
(the same frame around three paragraphs), from benchmarks/letter_render.py. Threads: rendering is
CPU-bound under the GIL, so a process renders one batch at a time whatever its thread count; its
other thread stores parts and talks to the database meanwhile. The raw limit runs with the workers'
garbage-collector settings (worker.pipeline.roles.tune_gc, a collection after each batch).
Env: BENCH_PG_ADMIN_URL (as for email_campaign.py), BENCH_LETTER_REDIS_URL (redis://127.0.0.1:6379/11,
flushed; not email_campaign.py's db 14, so the two can never take each other's messages). Worker tuning variables
(DELIVERY_BATCH_SIZE, ...) are passed through to the workers and recorded. Exit status: 0 when every
check held, 1 when one failed, 3 on timeout.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    RESULTS, S3_ENV, BenchDatabase, WorkerSampler, cleanup, collect_profiles, cpu_by_role, cpu_snapshot, drive,
    end_summary, exit_status, git_describe, load_contacts, log, machine_before, phases, proc_kib, recorded,
    redis_db_is_ours, reproduce_command, spawned_children, start_moto, start_profilers, start_workers, steady_rate,
    stop_profilers, stop_workers, summarize_profile, target_lines, terminate, tuning_env, wait_ready)
from benchmarks.letter_render import FIRST, LAST, LETTERS  # noqa: E402
from renderers.pdf import render_batch, render_pdfs  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Campaign, Contact, Recipient, StoredFile, User  # noqa: E402
from worker.pipeline import campaign_service  # noqa: E402
from worker.pipeline.app import App  # noqa: E402
from worker.channels.campaign_runtime import build_runtime  # noqa: E402
from worker.runtime.logging import configure_logging  # noqa: E402
from worker.pipeline.roles import tick, tune_gc  # noqa: E402
from worker.runtime.settings import Settings  # noqa: E402

# Not email_campaign.py's db 14: both flush their db, and one's workers would take the other's messages.
REDIS_URL = os.environ.get("BENCH_LETTER_REDIS_URL", "redis://127.0.0.1:6379/11")
TARGET, GOAL, RAW_BATCH = 60, 80, 50


# ----------------------------------------------------------------------------- data
def contact_line(i: int) -> dict:
    """One seed-shaped contact with a postal address (names with Ø ë é, as letter_render.py)."""
    fields = {"first_name": FIRST[i % len(FIRST)], "last_name": LAST[i % len(LAST)], "email": f"person{i}@example.com",
              "address": f"Vesterbrogade {i % 200 + 1}", "zip_code": "1620", "city": "København V",
              "country": "Denmark"}
    return {"id": str(uuid.UUID(int=10**9 + i)), "b2c": True, "team_id": 1, "status": None, "user": {"id": 1 + i % 2},
            "fixed_fields": [{"name": k, "value": v} for k, v in fields.items()], "custom_fields": {},
            "consent": {"email": {"consent_given": True, "updated_at": ""}}}


def bundle(kind: str = "invoice") -> dict:
    users = [{"id": 1, "first_name": "Doe", "last_name": "John", "email": "john@acme.example", "team_id": 1},
             {"id": 2, "first_name": "Ann", "last_name": "Lee", "email": "ann@acme.example", "team_id": 1}]
    return {"settings": {"domain_slug": "acme", "consent": {"custom": True, "unsubscribe_url": "https://acme.example/u"}},
            "teams": [{"id": 1, "name": "Sales"}], "users": users,
            "templates": [{"id": 3, "type": "letter", "company_id": 1, "title": "Letter", "user_id": 1,
                           "content": LETTERS[kind][0]}]}


def payload(kind: str = "invoice") -> dict:
    return {"name": "Spring letter", "type": "letter", "approved": True, "execute_now": True, "template_id": 3,
            "message": {"content": LETTERS[kind][1]}, "filter": [{"field": "contact.fixed_fields.city", "operator": "nempty"}]}


# ----------------------------------------------------------------------------- sampler
class Sampler(WorkerSampler):
    """Every 0.2 s: each worker process's and moto's peak RSS (VmHWM, the kernel's own peak)."""

    def __init__(self, supervisor: int, moto: int) -> None:
        super().__init__(supervisor)
        self.moto = moto
        self.moto_hwm = 0

    def sample(self) -> None:
        self.moto_hwm = max(self.moto_hwm, proc_kib(self.moto, "VmHWM") or 0)


# ----------------------------------------------------------------------------- profile
PACKAGES = [  # (label, path fragment): a sample counts for the frame nearest its leaf that matches one
    ("weasyprint: layout", "weasyprint/layout/"), ("weasyprint: text (pango)", "weasyprint/text/"),
    ("weasyprint: css", "weasyprint/css/"), ("weasyprint: boxes", "weasyprint/formatting_structure/"),
    ("weasyprint: draw", "weasyprint/draw/"), ("weasyprint: pdf write", "weasyprint/pdf/"), ("pdf: pydyf", "pydyf"),
    ("fonts: fontTools", "fontTools/"), ("html parse", "tinyhtml5/"), ("html parse", "html5lib/"),
    ("weasyprint: other", "weasyprint/"), ("project: pdf batching", "renderers/pdf"),
    ("s3: boto3/botocore", "botocore/"), ("s3: boto3/botocore", "boto3/"), ("s3: http", "urllib3/"),
    ("zip", "zipstream"), ("sql", "sqlalchemy/"), ("sql", "psycopg/"), ("jinja", "jinja2/"),
    ("broker: dramatiq", "dramatiq/"), ("project: other", "/work/main/"),
]


def package_shares(path: Path) -> dict:
    """Share (%) of the working samples per package (the frame nearest the leaf that matches decides)."""
    # py-spy counts a thread blocked in Dramatiq's consumer (waiting for a message) as busy: set it apart.
    return summarize_profile(path, PACKAGES, nearest_leaf=True,
                             set_aside=("broker: dramatiq", "dramatiq_samples_left_out"))


# ----------------------------------------------------------------------------- the run
def letter_jobs(app: App) -> Callable[[], object]:
    """The scheduler's jobs (``tick``: finalise asks for the letters ZIP), run once per call."""
    return lambda: tick(app)


def drive_letters(app: App, campaign_id: str, n: int, t_create: float, deadline: float) -> tuple[dict, list]:
    """The scheduler's jobs (with the letter ZIP hook) every 0.5 s until the campaign is final; phase
    times in seconds from creation, and the ledger's progress (sent rows) at each tick."""
    progress: list[tuple[float, int]] = []

    def read(session, campaign: Campaign) -> tuple:
        done = session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id,
                                                         Recipient.status.in_(("sent", "failed"))))
        return campaign.archive_requested_at, done

    def note(marks: dict, now: float, seen: tuple) -> None:
        asked, done = seen
        progress.append((now, done))
        if done:
            marks.setdefault("first_letters_s", now)
        if done >= n:
            marks.setdefault("all_letters_s", now)
        if asked is not None:
            marks.setdefault("zip_requested_s", now)

    return drive(app, campaign_id, t_create, deadline, letter_jobs, read, note, digits=2), progress


def letters_html(app: App, campaign_id: str) -> list[str]:
    """Every recipient's letter HTML, as the workers render it (ledger order)."""
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix)
        contacts = list(session.scalars(select(Contact).join(Recipient, Recipient.contact_id == Contact.id)
                                        .where(Recipient.campaign_id == campaign_id).order_by(Recipient.id)))
        users = {u.id: u for u in session.scalars(select(User))}
        return [runtime.render(c, users.get(c.user_id)).html for c in contacts]


def raw_limit(htmls: list[str]) -> dict:
    """``render_batch`` on chunks of 50 in this process, collecting garbage as a worker does:
    letters/s, CPU ms per letter, PDF bytes."""
    render_pdfs(htmls[:2])  # warm up: imports, fonts, the base stylesheet
    tune_gc()
    merged_all = True
    wall, cpu, size = time.perf_counter(), time.process_time(), 0
    for start in range(0, len(htmls), RAW_BATCH):
        chunk = htmls[start:start + RAW_BATCH]
        pdfs = render_batch(chunk)
        if pdfs is None:  # could not share a document: what the workers would do
            merged_all, pdfs = False, render_pdfs(chunk)
        size += sum(map(len, pdfs))
        gc.collect()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"letters_per_s": round(len(htmls) / wall, 1), "seconds": round(wall, 2),
            "cpu_ms_per_letter": round(cpu / len(htmls) * 1000, 2), "batch": RAW_BATCH,
            "all_batches_merged": merged_all, "pdf_bytes_per_letter": round(size / len(htmls))}


def verify(app: App, campaign_id: str, n: int) -> dict:
    """The ledger (N sent) and the ZIP in S3 (N distinct entries, each a PDF)."""
    with app.sessions() as session:
        ledger = dict(session.execute(select(Recipient.status, func.count()).where(Recipient.campaign_id == campaign_id)
                                      .group_by(Recipient.status)).all())
        campaign = session.get(Campaign, campaign_id)
        total_sent, file = campaign.total_sent, session.get(StoredFile, campaign.letters_file_id or "")
    out = {"ledger": ledger, "total_sent": total_sent, "zip_key": file and file.key}
    if file is not None:
        data = app.store.get_bytes(file.key)
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        out |= {"zip_bytes": len(data), "zip_bytes_recorded": file.size, "zip_entries": len(names),
                "zip_distinct_entries": len(set(names)),
                "zip_entries_pdf": sum(archive.read(name)[:5] == b"%PDF-" for name in names),
                "pdf_bytes_per_letter": round(sum(i.file_size for i in archive.infolist()) / max(len(names), 1))}
    out["ok"] = (ledger == {"sent": n} and total_sent == n and out.get("zip_entries") == n
                 and out.get("zip_distinct_entries") == n and out.get("zip_entries_pdf") == n)
    return out


def run(args: argparse.Namespace, stamp: str, result: dict) -> bool:
    """Set up, run the campaign, measure the raw limit, verify; clean up whatever was started."""
    n, deadline = args.letters, time.monotonic() + args.timeout
    db = BenchDatabase("letter")
    rds = redis.Redis.from_url(REDIS_URL)
    workdir = Path(tempfile.mkdtemp(prefix="cd-bench-letters-"))
    moto = proc = sampler = app = None
    owned = False  # the Redis db is flushed on the way out only when it was ours
    workers_log = RESULTS / f"letter_campaign-{stamp}-workers.log"
    try:
        moto, endpoint = start_moto(RESULTS / f"letter_campaign-{stamp}-moto.log")
        os.environ.update(S3_ENV | {"AWS_ENDPOINT_URL_S3": endpoint})  # this process reads the ZIP back too
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        storage_url = f"s3://{bucket}/letters"
        db_url = db.create()
        redis_db_is_ours(rds)  # refuses a db another run uses (a flush would break it)
        rds.flushdb()
        owned = True
        app = App(Settings(database_url=db_url, broker_url=REDIS_URL, smtp_url=None, storage_url=storage_url,
                           log_level="WARNING", log_format="json"))
        upgrade(app.engine)
        result["load_s"] = round(load_contacts(app, n, workdir, contact_line, lambda: bundle(args.letter)), 1)
        s = app.settings
        result["settings"] = {"delivery_batch_size": s.delivery_batch_size, "lease_seconds": s.lease_seconds,
                              "stall_seconds": s.stall_seconds, "storage_url": storage_url}
        env = {k: v for k, v in os.environ.items() if k != "SMTP_URL"} | {
            "DATABASE_URL": db_url, "BROKER_URL": REDIS_URL, "STORAGE_URL": storage_url,
            "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
        log(f"{n} contacts loaded in {result['load_s']} s; starting workers")
        proc = start_workers(args, env, workers_log)
        wait_ready(rds, proc, args.processes, min(deadline, time.monotonic() + 120))
        children = spawned_children(proc.pid)
        idle_rss = [proc_kib(pid, "VmRSS") or 0 for pid in children]
        sampler = Sampler(proc.pid, moto.pid)
        sampler.start()
        machine_before(result, args.wait_quiet, deadline)
        profilers = start_profilers(children, f"letter_campaign-{stamp}", rate=100) if args.profile else []
        runs = []
        for k in range(args.runs):
            log(f"workers ready ({children}); creating campaign {k + 1} of {args.runs}")
            campaign_id, project = one_campaign(app, args.letter, n, deadline, proc.pid, moto.pid)
            log(f"campaign {project['status']} in {project['seconds']:.1f} s ({project['letters_per_s']} "
                "letters/s); verifying")
            runs.append((campaign_id, project, verify(app, campaign_id, n)))
        stop_profilers(profilers)
        time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
        stop_workers(proc)
        # The median run stands for the figures; every run is listed, and every run's checks count.
        campaign_id, project, _ = sorted(runs, key=lambda run: run[1]["letters_per_s"])[len(runs) // 2]
        result["project"] = project | {
            "worker_idle_rss_mib": [round(v / 1024, 1) for v in idle_rss],
            "worker_peak_rss_mib": [round(v / 1024, 1) for v in sampler.hwm.values()],
            "worker_processes_seen": len(sampler.hwm), "moto_peak_rss_mib": round(sampler.moto_hwm / 1024, 1)}
        if len(runs) > 1:
            result["runs"] = [{"letters_per_s": p["letters_per_s"], "steady_letters_per_s": p["steady_letters_per_s"],
                               "worker_cpu_ms_per_letter": p["worker_cpu_ms_per_letter"]} for _, p, _ in runs]
        collect_profiles(profilers, result, "profile_pct", package_shares)
        result["checks"] = next((checks for _, _, checks in runs if not checks["ok"]), runs[0][2])
        log("the raw WeasyPrint limit")
        htmls = letters_html(app, campaign_id)
        result["raw_weasyprint"] = raw_limit(htmls)
        result["ratio_project_to_raw"] = round(result["project"]["letters_per_s"]
                                               / result["raw_weasyprint"]["letters_per_s"], 2)
        rate = result["project"]["letters_per_s"]
        result["targets_met"] = {f">= {TARGET} letters/s": rate >= TARGET, f"goal >= {GOAL} letters/s": rate >= GOAL}
        return all(checks["ok"] and p["status"] == "completed" for _, p, checks in runs)
    finally:
        cleanup([lambda: sampler and sampler.stop.set(), lambda: proc and stop_workers(proc),
                 lambda: app and app.close(), db.drop, lambda: owned and rds.flushdb(),
                 lambda: moto and terminate(moto, 10), lambda: shutil.rmtree(workdir, ignore_errors=True)])


def one_campaign(app: App, kind: str, n: int, deadline: float, workers_pid: int, moto_pid: int) -> tuple[str, dict]:
    """Create one campaign to the N contacts and drive it to its end: its id and its figures."""
    cpu_before, t_create = cpu_snapshot(), time.monotonic()
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, payload(kind), 1).id
    marks, progress = drive_letters(app, campaign_id, n, t_create, deadline)
    cpu = cpu_by_role(cpu_before, cpu_snapshot(), time.monotonic() - t_create, workers_pid, moto_pid)
    cpu["s3 (moto)"] = cpu.pop("smtp-sink", 0.0)
    elapsed = marks["final_s"]
    return campaign_id, {
        "status": marks["status"], "seconds": elapsed, "letters_per_s": round(n / elapsed, 1),
        "steady_letters_per_s": steady_rate(progress, 0, n, digits=1),
        "phases_s": phases(marks),
        "cpu_seconds": cpu, "worker_cpu_ms_per_letter": round(cpu.get("workers", 0) * 1000 / n, 2)}


def summary(r: dict) -> str:
    """The headline figures in a few lines."""
    p, raw, c = r.get("project", {}), r.get("raw_weasyprint", {}), r.get("checks", {})
    lines = [f"\n== letter campaign, {r['letters']} {r['letter']} letters, {r['processes']} worker processes x {r['threads']} threads, S3 (moto)"]
    if p:
        cpu = p["cpu_seconds"]
        lines += [f"project: {p['letters_per_s']} letters/s send_at -> {p['status']} (ZIP included) in {p['seconds']} s "
                  f"(steady {p['steady_letters_per_s']} letters/s); phases {p['phases_s']}",
                  f"worker peak RSS {p['worker_peak_rss_mib']} MiB (idle {p['worker_idle_rss_mib']}); "
                  f"moto peak RSS {p['moto_peak_rss_mib']} MiB",
                  f"cpu-s: workers {cpu.get('workers')} ({p['worker_cpu_ms_per_letter']} ms/letter), postgres "
                  f"{cpu.get('postgres')}, moto {cpu.get('s3 (moto)')}, benchmark {cpu.get('benchmark (scheduler, sampler)')}, "
                  f"else {cpu['everything else']} (machine busy {cpu['machine busy']} of {cpu['machine capacity']})"]
    if r.get("runs"):
        rates = [run["letters_per_s"] for run in r["runs"]]
        lines.append(f"runs: {', '.join(map(str, rates))} letters/s (worker CPU ms/letter "
                     f"{', '.join(str(run['worker_cpu_ms_per_letter']) for run in r['runs'])}); "
                     f"the figures above are the median run's")
    if "zip_bytes" in c:
        lines.append(f"ZIP: {c['zip_bytes'] / 2**20:.2f} MiB, {c['zip_entries']} entries "
                     f"({c['pdf_bytes_per_letter'] / 1024:.1f} KiB PDF per letter)")
    if raw:
        lines.append(f"raw WeasyPrint, render_batch of {raw['batch']} in one process: {raw['letters_per_s']} letters/s "
                     f"({raw['cpu_ms_per_letter']} CPU ms/letter); project/raw {r['ratio_project_to_raw']}")
    lines += target_lines(r.get("targets_met", {}))
    for name, shares in r.get("profile_pct", {}).items():
        lines.append(f"profile {name}: " + ", ".join(f"{k} {v}%" for k, v in shares.items() if not k.startswith(("samples", "dramatiq"))))
    if c:
        lines.append(f"checks: {'ok' if c['ok'] else 'FAILED'} (ledger {c['ledger']}, ZIP entries {c.get('zip_entries')})")
    return end_summary(lines, r)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--letters", type=int, default=2000)
    parser.add_argument("--letter", choices=sorted(LETTERS), default="invoice",
                        help="invoice: with an item table and a page footer; short: three paragraphs")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="watchdog: give up after this (s)")
    parser.add_argument("--runs", type=int, default=1,
                        help="campaigns run one after another by the same workers; the median one is reported")
    parser.add_argument("--profile", action="store_true", help="py-spy record each worker process (slows it a little)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S s for the machine to be under 25%% busy")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    tuning = tuning_env()
    reproduce = reproduce_command("letter_campaign.py", [
        f"--letters {args.letters}", *([f"--letter {args.letter}"] if args.letter != "invoice" else []),
        f"--processes {args.processes} --threads {args.threads}", *([f"--runs {args.runs}"] if args.runs != 1 else []),
        *(["--profile"] if args.profile else []), *([f"--wait-quiet {args.wait_quiet:g}"] if args.wait_quiet else [])],
        tuning)
    configure_logging("json", "WARNING")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp, started = time.strftime("%Y%m%d-%H%M%S"), time.monotonic()
    result = {"benchmark": "letter_campaign", "letters": args.letters, "letter": args.letter,
              "processes": args.processes,
              "threads": args.threads, "tuning_env": tuning, "reproduce": reproduce, "cpus": os.cpu_count(),
              "git": git_describe()}
    ok = False
    with recorded(result, RESULTS / f"letter_campaign-{args.letters}-{stamp}.json", summary, reproduce,
                  watchdog=args.timeout, started=started, print_json=False):
        ok = run(args, stamp, result)
    return exit_status(ok, result)


if __name__ == "__main__":
    sys.exit(main())
