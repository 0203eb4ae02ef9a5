"""Benchmark: a worker's CPU per email, stage by stage, in one thread and without SMTP.

Creates a fresh PostgreSQL database with N contacts and the email benchmark's newsletter campaign
(``benchmarks/email_campaign.py``: the same template, content and contacts), fans it out through
the service, and then runs each stage of a worker's path (``worker/pipeline/delivery.py`` and
``worker/channels/email.py``) with the functions the workers run, batch by batch, timing each one:

- ``claim``: ``storage.ledger.claim`` (``pending -> sending``, one statement a batch);
- ``load contacts``: the batch's contacts and their users (``delivery._load_contacts``);
- ``recheck``: ``CampaignRuntime.recheck`` (filter and consent again, on the current contact);
- ``render``: ``CampaignRuntime.render`` (context, Jinja, unsubscribe footer, text alternative);
- ``email``: ``CampaignRuntime.email`` less its ``render``: headers, MIME and Message-ID;
- ``pack``: the archive's compression (``storage.archive.Packer``);
- ``write``: ``storage.outcome_writes.write_outcomes`` in rounds of 40 (``sending -> sent`` with
  the archived content), as the outcome writer does under load.

What it leaves out is the SMTP client (``benchmarks/smtp_client.py`` measures it alone), the broker
and the threads' hand-overs: this is the part of a worker's CPU that does not depend on the relay.
Prints microseconds a message per stage, of this thread's CPU and of the wall clock (which adds
PostgreSQL's time for the stages that query it), and the command to reproduce them. The stages that do not change the ledger
(load, recheck, render, email, pack) run ``--passes`` times over every batch, the best pass kept.

    .venv/bin/python benchmarks/worker_path.py                     # 20,000 recipients
    .venv/bin/python benchmarks/worker_path.py --recipients 50000 --passes 5

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres). The database is
dropped at the end. Exit status 0, or 1 when the ledger does not end with N ``sent`` rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from benchmarks.harness import log, reproduce_command  # noqa: E402
from benchmarks.ledger_bytes import fanned_out_newsletter, smtpless_app  # noqa: E402
from storage.ledger import claim  # noqa: E402
from storage.models import Campaign, Recipient  # noqa: E402
from storage.outcome_writes import OutcomeRows, prepare_connection, write_outcomes  # noqa: E402
from storage.statuses import RecipientStatus  # noqa: E402
from storage.timefmt import now  # noqa: E402
from worker.channels.campaign_runtime import build_runtime  # noqa: E402
from worker.pipeline.app import App  # noqa: E402
from worker.pipeline.delivery import _load_contacts  # noqa: E402
from worker.runtime.supervise import tune_gc  # noqa: E402

ROUND = 40  # outcomes per write under load (2 x SMTP_POOL_SIZE)
PURE = ("load contacts", "recheck", "render", "email", "pack")


class Spent:
    """Seconds of this thread's CPU and of the wall clock, per stage."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self._at = (time.thread_time(), time.perf_counter())

    def lap(self, stage: str) -> None:
        """Charge the time since the last lap to ``stage``."""
        at = (time.thread_time(), time.perf_counter())
        self.cpu[stage] += at[0] - self._at[0]
        self.wall[stage] += at[1] - self._at[1]
        self._at = at


def one_pass(app: App, runtime, claimed_batches: list[list]) -> tuple[Spent, list]:
    """The stages that change nothing, over every batch; and the rounds of packed contents to write."""
    spent = Spent()
    packed_rounds = []
    for claimed in claimed_batches:
        spent.lap("")
        with app.sessions() as session:
            contacts, users = _load_contacts(session, [row.contact_id for row in claimed])
        spent.lap("load contacts")
        ready = []
        for row in claimed:
            contact = contacts.get(row.contact_id)
            if runtime.recheck(contact) is None:
                ready.append((row, contact, users.get(contact.user_id)))
        spent.lap("recheck")
        packed = []
        for row, contact, user in ready:
            runtime.render(contact, user)
            spent.lap("render")
            email = runtime.email(contact, user)
            spent.lap("email")  # email() renders too: the render's time is taken off below
            packed.append((row.id, runtime.archive.pack(email.html)))
            spent.lap("pack")
        packed_rounds += [packed[i:i + ROUND] for i in range(0, len(packed), ROUND)]
    for figures in (spent.cpu, spent.wall):
        figures["email"] -= figures["render"]
        figures.pop("", None)
    return spent, packed_rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    n = args.recipients
    db, app = smtpless_app("worker_path")
    ok = False
    try:
        campaign_id, batches = fanned_out_newsletter(app, n)
        with app.sessions() as session:
            runtime = build_runtime(session, session.get(Campaign, campaign_id), app.settings.campaign_domain_suffix)
        tune_gc()  # as a worker process is tuned once started
        claims = Spent()
        claimed_batches = []
        for batch in batches:
            with app.sessions.begin() as session:
                claimed_batches.append(claim(session, batch, now()))
        claims.lap("claim")
        best: Spent | None = None
        for k in range(args.passes):
            spent, packed_rounds = one_pass(app, runtime, claimed_batches)
            log(f"pass {k + 1}: {sum(spent.cpu.values()) / n * 1e6:.1f} us of CPU a message")
            if best is None or sum(spent.cpu.values()) < sum(best.cpu.values()):
                best = spent
        writes = Spent()
        with app.engine.connect() as conn:
            prepare_connection(conn)
            for packed in packed_rounds:
                rows = OutcomeRows(asking={campaign_id}, archive=dict(packed),
                                   final=[(row_id, RecipientStatus.SENT.value, None, None) for row_id, _ in packed])
                with conn.begin():
                    write_outcomes(conn, rows, now())
        writes.lap("write")
        with app.sessions() as session:
            sent = session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id,
                                                             Recipient.status == RecipientStatus.SENT))
        ok = sent == n
        print(f"\n== a worker's path for {n:,} emails (the email benchmark's newsletter), one thread, no SMTP; "
              f"best of {args.passes} passes for {', '.join(PURE)}")
        cpu, wall = claims.cpu | best.cpu | writes.cpu, claims.wall | best.wall | writes.wall
        print(f"{'us a message':>14}: {'CPU':>7} {'wall':>7}")
        for stage in ("claim", *PURE, "write"):
            print(f"{stage:>14}: {cpu[stage] / n * 1e6:7.1f} {wall[stage] / n * 1e6:7.1f}")
        print(f"{'all':>14}: {sum(cpu.values()) / n * 1e6:7.1f} {sum(wall.values()) / n * 1e6:7.1f}")
        print(f"checks: {sent} of {n} rows sent: {ok}")
        print(f"reproduce: {reproduce_command('worker_path.py', [f'--recipients {n}', f'--passes {args.passes}'])}")
    finally:
        app.close()
        db.drop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
