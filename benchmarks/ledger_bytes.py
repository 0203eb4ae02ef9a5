"""Benchmark: what one recipient of an email campaign leaves in PostgreSQL, in bytes.

Creates a fresh PostgreSQL database, loads N contacts and the email benchmark's newsletter campaign
(``benchmarks/email_campaign.py``: the same template, content and contacts), fans it out through
the service (``worker.pipeline.fanout.dispatch``: the ledger's INSERT ... SELECT) and then moves
every row as a worker does, without SMTP: each delivery batch claimed (``pending -> sending``),
each message rendered by the campaign's runtime, and the outcomes written by
``storage.outcome_writes.write_outcomes`` (``sending -> sent`` and the archived content), in rounds
of 40 as the workers write them. It prints the size of the ledger (``recipients``: table and each
index, and the archived contents it holds) per recipient: after the fan-out, after the send, and
after a plain ``VACUUM`` (what autovacuum gets back), plus the archive's content bytes as sent
against as stored. Sizes do not depend on the machine's load, so one run is enough.

    .venv/bin/python benchmarks/ledger_bytes.py                  # 50,000 recipients
    .venv/bin/python benchmarks/ledger_bytes.py --recipients 200000

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres). The database is
dropped at the end. Exit status 0, or 1 when the ledger does not hold N ``sent`` rows or an
archived message does not read back as sent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

from benchmarks.email_campaign import bundle, contact_line, payload  # noqa: E402
from benchmarks.harness import BenchDatabase, load_contacts, log, reproduce_command  # noqa: E402
from storage.campaign_messages import get_message  # noqa: E402
from storage.ledger import claim  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Campaign, Contact, Recipient, User  # noqa: E402
from storage.outcome_writes import OutcomeRows, prepare_connection, write_outcomes  # noqa: E402
from storage.statuses import RecipientStatus  # noqa: E402
from storage.timefmt import now  # noqa: E402
from worker.channels.campaign_runtime import build_runtime  # noqa: E402
from worker.pipeline import campaign_service, fanout  # noqa: E402
from worker.pipeline.app import App  # noqa: E402
from worker.runtime.settings import Settings  # noqa: E402

ROUND = 40  # outcomes per write: a worker writes after each SMTP round (2 x SMTP_POOL_SIZE)


def sizes(app: App) -> dict[str, int]:
    """Bytes on disk of the ledger's table (with TOAST) and of each of its indexes."""
    with app.engine.connect() as conn:
        parts = {"recipients (table)": conn.execute(text("SELECT pg_table_size('recipients')")).scalar()}
        for name, size in conn.execute(text(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                "WHERE indrelid = 'recipients'::regclass ORDER BY 1")):
            parts[f"  index {name}"] = size
    return parts


def vacuum(app: App) -> None:
    with app.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM recipients"))


def send_all(app: App, campaign_id: str, batches: list) -> tuple[int, int, int]:
    """Claim, render and record every batch as a worker does; returns (messages, content bytes as
    sent, as stored)."""
    messages = content_bytes = stored_bytes = 0
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix)
        users = {u.id: u for u in session.scalars(select(User))}
    for batch in batches:
        with app.sessions.begin() as session:
            claimed = claim(session, batch, now())
        with app.sessions() as session:
            contacts = {c.id: c for c in session.scalars(
                select(Contact).where(Contact.id.in_([c.contact_id for c in claimed])))}
        for start in range(0, len(claimed), ROUND):
            rows = OutcomeRows(asking={campaign_id})
            for item in claimed[start:start + ROUND]:
                contact = contacts[item.contact_id]
                html = runtime.email(contact, users.get(contact.user_id)).html
                rows.archive[item.id] = packed = runtime.archive.pack(html)
                rows.final.append((item.id, RecipientStatus.SENT.value, None, None))
                content_bytes += len(html.encode())
                stored_bytes += len(packed)
            with app.engine.connect() as conn:
                prepare_connection(conn)
                with conn.begin():
                    write_outcomes(conn, rows, now())
            messages += len(rows.final)
    return messages, content_bytes, stored_bytes


def smtpless_app(name: str) -> tuple[BenchDatabase, App]:
    """A fresh PostgreSQL database named for the benchmark, and an App on it that sends nothing
    (SMTP_URL is only checked to be set; the broker is in-process)."""
    db = BenchDatabase(name)
    url = db.create()
    return db, App(Settings(database_url=url, broker_url="memory://", smtp_url="smtp://127.0.0.1:1", _env_file=None))


def fanned_out_newsletter(app: App, n: int) -> tuple[str, list]:
    """Migrate ``app``'s empty database, load N of the email benchmark's contacts, create its
    newsletter campaign as a draft and fan it out: the campaign's id and its delivery batches."""
    upgrade(app.engine)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = load_contacts(app, n, Path(tmp), contact_line, bundle)
    log(f"{n} contacts loaded in {seconds:.1f} s")
    with app.sessions.begin() as session:
        draft = payload() | {"execute_now": False, "send_at": "2099-01-01 00:00:00"}
        campaign_id = campaign_service.create(session, draft, 1).id
    batches: list = []
    started = time.perf_counter()
    fanout.dispatch(app, campaign_id, batches.extend)
    log(f"fanned out in {time.perf_counter() - started:.1f} s: {len(batches)} batches")
    return campaign_id, batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=50_000)
    args = parser.parse_args()
    n = args.recipients
    db, app = smtpless_app("ledger_bytes")
    ok = True
    try:
        campaign_id, batches = fanned_out_newsletter(app, n)
        stages = {"after fan-out": sizes(app)}
        started = time.perf_counter()
        messages, content_bytes, stored_bytes = send_all(app, campaign_id, batches)
        log(f"{messages} messages rendered and recorded in {time.perf_counter() - started:.1f} s")
        stages["after the send"] = sizes(app)
        vacuum(app)
        stages["after VACUUM"] = sizes(app)
        with app.sessions() as session:
            sent = session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id,
                                                             Recipient.status == RecipientStatus.SENT))
            archived = session.scalar(select(func.count()).where(Recipient.content.is_not(None)))
            first = session.scalar(select(Recipient.id).order_by(Recipient.id).limit(1))
            shown = get_message(session, campaign_id, first)["content"]
        ok = sent == n and archived == n and shown.startswith("<!doctype html>")
        print(f"\n== {n:,} recipients, one email campaign (the email benchmark's newsletter)")
        for stage, parts in stages.items():
            print(f"{stage}: {sum(parts.values()) / n:,.0f} B a recipient, the archived content included")
            for name, size in parts.items():
                print(f"    {name}: {size / n:,.1f} B")
        print(f"archived content: {content_bytes / max(messages, 1):,.0f} B a message as sent, "
              f"{stored_bytes / max(messages, 1):,.0f} B as stored")
        print(f"checks: {sent} sent rows, {archived} archived messages, the first reads back as HTML: {ok}")
        print(f"reproduce: {reproduce_command('ledger_bytes.py', [f'--recipients {n}'])}")
    finally:
        app.close()
        db.drop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
