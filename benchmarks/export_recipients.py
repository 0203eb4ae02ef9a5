"""Benchmark: the XLSX export of a dispatched campaign's N recipients (``run_export``).

Creates a fresh PostgreSQL database, migrates it, loads N seed-shaped contacts from a generated
JSON Lines file (``storage.loader.load_jsonl``), creates an email campaign whose filter selects
all of them and fans it out (``storage.ledger.insert_recipients``; the deliverable rows are then
marked ``sent``, as after a finished campaign). The export itself runs in a fresh child process
(multiprocessing spawn) so its peak RSS (VmHWM / ru_maxrss) is the export's alone, not the
loading's: ``start_export`` then ``run_export`` with a ``file://`` STORAGE_URL in a temp dir.
The stored file is checked with openpyxl (read-only): N + 1 rows, the header, the first contact,
the delivery statuses' counts equal the ledger's.
Prints the figures and the command to reproduce them, saves them as JSON in benchmarks/results/,
and drops the database.

    .venv/bin/python benchmarks/export_recipients.py                      # 100,000 recipients
    .venv/bin/python benchmarks/export_recipients.py --recipients 10000

Env: BENCH_PG_ADMIN_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
Target: export peak RSS under 200 MiB and flat in N. Exit status 0 when the export is done, the
file checks out and the target is met; 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Only light imports at module level: the spawned child imports this module again, and what it
# imports here would count towards the export's RSS (benchmarks.harness imports the standard library only).
from benchmarks.harness import (  # noqa: E402
    RESULTS, BenchDatabase, end_summary, git_describe, loadavg, log, proc_kib, recorded, reproduce_command,
    target_lines)

TARGET_RSS_MIB = 200
# Every generated contact has a mobile number, so this selects all of them.
SELECT_ALL = [{"field": "contact.fixed_fields.mobile_phone_number", "operator": "nempty"}]


# ----------------------------------------------------------------------------- setup (parent)
def bundle() -> dict:
    """Settings, teams and the email wrapper template the campaign needs (users come with contacts)."""
    return {
        "settings": {"domain_slug": "acme", "consent": {"custom": True, "unsubscribe_url": "https://acme.example/unsub"}},
        "teams": [{"id": i, "name": f"Team {i}"} for i in range(1, 6)],
        "templates": [{"id": 2, "type": "email", "company_id": 1, "title": "Newsletter", "user_id": 1,
                       "content": "<html><body>{{ content }}</body></html>"}],
    }


def payload() -> dict:
    return {"name": "Export benchmark", "type": "email", "approved": True, "execute_now": True, "template_id": 2,
            "message": {"subject": "Hello {{ contact.first_name }}", "sender": "news@acme.example",
                        "content": "<p>Dear {{ contact.first_name }}</p>"},
            "filter": SELECT_ALL}


def prepare(db_url: str, n: int, seed: int, workdir: Path) -> tuple[str, dict]:
    """Migrate, load N contacts, create the campaign and its ledger; the campaign id and timings."""
    from sqlalchemy import func, select, update

    from benchmarks.load_contacts import write_jsonl
    from storage.db import make_engine, make_sessionmaker
    from storage.filters import parse_filters
    from storage.ledger import insert_recipients
    from storage.loader import load_bundle, load_jsonl
    from storage.migrate import upgrade
    from storage.models import Campaign, Recipient
    from storage.timefmt import now as utcnow
    from worker.pipeline import campaign_service

    figures: dict = {}
    engine = make_engine(db_url)
    try:
        sessions = make_sessionmaker(engine)
        upgrade(engine)
        path = workdir / "contacts.jsonl"
        started = time.perf_counter()
        write_jsonl(path, n, seed)
        figures["generate_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        load_bundle(sessions, bundle())
        loaded = load_jsonl(sessions, path)
        figures["load_s"] = round(time.perf_counter() - started, 1)
        path.unlink()
        if loaded["contacts"] != n:
            raise RuntimeError(f"loaded {loaded['contacts']} contacts, expected {n}")
        started = time.perf_counter()
        with sessions.begin() as session:
            campaign = campaign_service.create(session, payload(), 1)
            campaign.status = "sending"
            session.flush()
            now = utcnow()
            total = insert_recipients(session, campaign, parse_filters(campaign.filter or []), now).total
            campaign.dispatched_at = now
            # As after a finished campaign: every deliverable row sent (the export reads any status).
            session.execute(update(Recipient).where(Recipient.campaign_id == campaign.id, Recipient.status == "pending")
                            .values(status="sent", updated_at=now))
            campaign_id = campaign.id
        with sessions() as session:
            ledger = {f"{status}:{reason}" if reason else status: count for status, reason, count in session.execute(
                select(Recipient.status, Recipient.reason, func.count()).where(Recipient.campaign_id == campaign_id)
                .group_by(Recipient.status, Recipient.reason)).all()}
            if session.get(Campaign, campaign_id).dispatched_at is None:
                raise RuntimeError("the campaign was not marked dispatched")
        figures["fan_out_s"] = round(time.perf_counter() - started, 1)
        figures["ledger"] = ledger
        if total != n:
            raise RuntimeError(f"the campaign selected {total} of {n} contacts")
        # Fresh tables have no statistics yet; ANALYZE so the export's plan is the one a live database gets.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
        return campaign_id, figures
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- the export (child)
def export_child(db_url: str, storage_url: str, campaign_id: str, out) -> None:
    """In a fresh process: start and run the export; send back timings, RSS and the file's path."""
    try:
        from storage.models import Export, StoredFile
        from worker.pipeline.app import App
        from worker.pipeline.exports import run_export, start_export
        from worker.runtime.logging import configure_logging
        from worker.runtime.settings import Settings

        configure_logging("json", "WARNING")
        app = App(Settings(database_url=db_url, storage_url=storage_url, log_level="WARNING", log_format="json"))
        with app.sessions.begin() as session:
            export_id = start_export(session, campaign_id).id
        before_kib = proc_kib("self", "VmRSS") or 0
        cpu0, started = time.process_time(), time.perf_counter()
        run_export(app, campaign_id, export_id)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        hwm_kib = proc_kib("self", "VmHWM") or 0
        maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with app.sessions() as session:
            export = session.get(Export, export_id)
            stored = session.get(StoredFile, export.file_id) if export.file_id else None
            result = {"status": export.status, "error": export.error,
                      "path": str(app.store.path(stored.key)) if stored else None,
                      "size": stored.size if stored else None}
        app.close()
        out.send(result | {"seconds": seconds, "cpu_s": cpu, "rss_before_kib": before_kib,
                           "vm_hwm_kib": hwm_kib, "ru_maxrss_kib": maxrss_kib})
    except BaseException as exc:  # reported by the parent
        out.send({"status": "crashed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        out.close()


def run_child(db_url: str, storage_url: str, campaign_id: str, timeout: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=export_child, args=(db_url, storage_url, campaign_id, send), name="export")
    child.start()
    send.close()
    if not receive.poll(timeout):
        child.kill()
        child.join()
        return {"status": "timeout", "error": f"no answer within {timeout:.0f} s"}
    result = receive.recv()
    child.join(30)
    result["exit_code"] = child.exitcode
    return result


# ----------------------------------------------------------------------------- checks (parent)
def expected_first(db_url: str, campaign_id: str) -> str:
    """The contact of the campaign's first ledger row: the export's first data row."""
    from sqlalchemy import select

    from storage.db import make_engine, make_sessionmaker
    from storage.models import Recipient

    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            return session.scalar(select(Recipient.contact_id).where(Recipient.campaign_id == campaign_id)
                                  .order_by(Recipient.id).limit(1))
    finally:
        engine.dispose()


def verify(path: str, n: int, first_contact: str) -> dict:
    """openpyxl, read-only: N + 1 rows, the export's header, the first contact first."""
    import openpyxl

    from worker.pipeline.exports import HEADER

    started = time.perf_counter()
    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        sheet = workbook.worksheets[0]
        rows = 0
        header = first = None
        statuses: dict[str, int] = {}
        status_col = len(HEADER) - 3
        for row in sheet.iter_rows(values_only=True):
            if rows == 0:
                header = list(row)
            else:
                if rows == 1:
                    first = row[0]
                statuses[row[status_col]] = statuses.get(row[status_col], 0) + 1
            rows += 1
    finally:
        workbook.close()
    return {"rows": rows, "rows_ok": rows == n + 1, "header_ok": header == HEADER,
            "first_contact_ok": first == first_contact, "delivery_status_counts": statuses,
            "verify_s": round(time.perf_counter() - started, 1)}


# ----------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--timeout", type=float, default=1800, help="give up on the export after this (s)")
    args = parser.parse_args()
    if args.recipients < 1:
        parser.error("--recipients must be at least 1")
    n = args.recipients
    reproduce = reproduce_command("export_recipients.py", [f"--recipients {n}", f"--seed {args.seed}"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    db = BenchDatabase("export")
    result: dict = {"benchmark": "export_recipients", "recipients": n, "reproduce": reproduce,
                    "git": git_describe(), "cpus": os.cpu_count()}
    ok = False
    with tempfile.TemporaryDirectory(prefix="cd-bench-export-") as tmp, \
            recorded(result, RESULTS / f"export_recipients-{n}-{stamp}.json", summary, reproduce):
        workdir = Path(tmp)
        try:
            db_url = db.create()
            log(f"database {db.name}: loading {n} contacts and fanning out")
            campaign_id, result["setup"] = prepare(db_url, n, args.seed, workdir)
            log(f"setup done {result['setup']}; exporting in a spawned child")
            (workdir / "objects").mkdir()
            result["loadavg_before"] = loadavg()
            child = run_child(db_url, (workdir / "objects").as_uri(), campaign_id, args.timeout)
            result["loadavg_after"] = loadavg()
            if child["status"] != "done":
                raise RuntimeError(f"export {child['status']}: {child.get('error')}")
            peak = max(child["vm_hwm_kib"], child["ru_maxrss_kib"]) / 1024
            result["export"] = {
                "seconds": round(child["seconds"], 2), "rows_per_s": round(n / child["seconds"]),
                "cpu_s": round(child["cpu_s"], 2), "file_mib": round(child["size"] / 2**20, 2),
                "rss_before_export_mib": round(child["rss_before_kib"] / 1024, 1),
                "peak_rss_mib": round(peak, 1),
                "growth_during_export_mib": round(peak - child["rss_before_kib"] / 1024, 1),
                "vm_hwm_kib": child["vm_hwm_kib"], "ru_maxrss_kib": child["ru_maxrss_kib"],
            }
            log(f"export done in {child['seconds']:.1f} s, peak RSS {peak:.1f} MiB; checking the file")
            result["checks"] = checks = verify(child["path"], n, expected_first(db_url, campaign_id))
            by_status: dict[str, int] = {}
            for key, count in result["setup"]["ledger"].items():
                by_status[key.split(":")[0]] = by_status.get(key.split(":")[0], 0) + count
            checks["statuses_match_ledger"] = checks["delivery_status_counts"] == by_status
            result["target_met"] = {f"peak RSS < {TARGET_RSS_MIB} MiB": peak < TARGET_RSS_MIB}
            ok = all(checks[k] for k in ("rows_ok", "header_ok", "first_contact_ok", "statuses_match_ledger"))
            ok = ok and peak < TARGET_RSS_MIB
        finally:
            db.drop()
    return 0 if ok else 1


def summary(r: dict) -> str:
    """The headline figures in a few lines."""
    lines = [f"\n== recipients export, {r['recipients']} recipients"]
    if e := r.get("export"):
        lines.append(f"export: {e['seconds']} s ({e['rows_per_s']} rows/s, {e['cpu_s']} cpu-s), {e['file_mib']} MiB file; "
                     f"peak RSS {e['peak_rss_mib']} MiB (before the export {e['rss_before_export_mib']} MiB, "
                     f"growth {e['growth_during_export_mib']} MiB)")
    if c := r.get("checks"):
        lines.append(f"file: {c['rows']} rows (N + 1: {c['rows_ok']}), header {c['header_ok']}, "
                     f"first contact {c['first_contact_ok']}, statuses match the ledger {c['statuses_match_ledger']}")
    lines += target_lines(r.get("target_met", {}))
    return end_summary(lines, r)


if __name__ == "__main__":
    sys.exit(main())
