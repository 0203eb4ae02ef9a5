"""Benchmark: what a worker's threads cost each other while they render emails (Python's GIL).

Creates a fresh PostgreSQL database with N contacts and the email benchmark's newsletter campaign
(``benchmarks/email_campaign.py``), fans it out, loads the contacts once, and then has 1, 2 and 4
threads each build every recipient's email (``CampaignRuntime.email``: context, Jinja, text
alternative, MIME) at the same time, with and without compressing its content for the archive
(``storage.archive.Packer``), as a worker's render threads do. Prints the process's CPU (user and
system) per email for each case, best of ``--passes``.

What it shows: the same work costs more CPU on more threads only where a thread lets go of the GIL
mid-message. zlib releases it around every ``compress`` and ``flush`` call; with other threads
waiting, each release hands the GIL over and the thread waits for it back (a context switch each).
Without the compression, 4 threads cost what 1 does. (Tried and not kept: a lock so that a
process's threads build their rounds one at a time brought 4 threads here to 75-84 us an email
against 104-113, but ``email_campaign.py --recipients 40000``, six pairs on 2026-11-29, showed no
gain: 0.29-0.44 ms of worker CPU a message with it, 0.265-0.365 without. A worker's threads spend
much of their time waiting on the database and the relay, not building side by side.)

``--dkim rsa|ed25519`` signs every email too (a throwaway key for the sender's domain, as the
workers sign with ``DKIM_KEYS_DIR`` set): hashlib lets go of the GIL to hash 2,048 bytes or more
(the body's hash), and ``cryptography`` around every signature. (Tried and not kept: hashing the
body in pieces under 2,048 bytes, which keeps the GIL, brought 4 threads here from 252-264 to
224-225 us an email with ed25519 but changed nothing with the archive compression on, nor in
``email_campaign.py --recipients 40000 --dkim ed25519``, two pairs on 2026-11-29: 0.412 and 0.443
ms of worker CPU a message before, 0.417 and 0.427 with it.)

    .venv/bin/python benchmarks/render_threads.py
    .venv/bin/python benchmarks/render_threads.py --recipients 5000 --passes 3
    .venv/bin/python benchmarks/render_threads.py --dkim ed25519

Env: BENCH_PG_ADMIN_URL (postgresql+psycopg://postgres@127.0.0.1:5432/postgres). The database is
dropped at the end.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import reproduce_command  # noqa: E402
from benchmarks.ledger_bytes import fanned_out_newsletter, smtpless_app  # noqa: E402
from renderers.dkim import load_keys  # noqa: E402
from storage.ledger import claim  # noqa: E402
from storage.models import Campaign  # noqa: E402
from storage.timefmt import now  # noqa: E402
from tests.dkimkeys import write_ed25519_key, write_rsa_key  # noqa: E402
from worker.channels.campaign_runtime import build_runtime  # noqa: E402
from worker.pipeline.delivery import _load_contacts  # noqa: E402
from worker.runtime.supervise import tune_gc  # noqa: E402


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def one_case(runtime, items: list, threads: int, pack: bool) -> tuple[float, float]:
    """(user, system) CPU seconds a message, ``threads`` threads each building every email."""
    def work() -> None:
        for contact, user in items:
            email = runtime.email(contact, user)
            if pack:
                runtime.archive.pack(email.html)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    user0, system0 = cpu()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    user1, system1 = cpu()
    messages = threads * len(items)
    return (user1 - user0) / messages, (system1 - system0) / messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=2_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--dkim", choices=["rsa", "ed25519"], help="sign every email with a throwaway key")
    args = parser.parse_args()
    db, app = smtpless_app("render_threads")
    try:
        campaign_id, batches = fanned_out_newsletter(app, args.recipients)
        with app.sessions() as session, tempfile.TemporaryDirectory() as keys:
            campaign, suffix = session.get(Campaign, campaign_id), app.settings.campaign_domain_suffix
            runtime = build_runtime(session, campaign, suffix)
            if args.dkim:
                write = write_ed25519_key if args.dkim == "ed25519" else write_rsa_key
                write(Path(keys), "bench", runtime.sender.domain)
                runtime = build_runtime(session, campaign, suffix, load_keys(Path(keys)))
                assert runtime.dkim is not None
        rows = []
        for batch in batches:
            with app.sessions.begin() as session:
                rows += claim(session, batch, now())
        with app.sessions() as session:
            contacts, users = _load_contacts(session, [row.contact_id for row in rows])
        items = [(contacts[row.contact_id], users.get(contacts[row.contact_id].user_id)) for row in rows]
        tune_gc()  # as a worker process is tuned once started
        one_case(runtime, items, 1, True)  # warm: shapes of the text alternative, caches
        signed = f", DKIM-signed ({args.dkim})" if args.dkim else ""
        print(f"\n== {len(items):,} emails (the email benchmark's newsletter{signed}) built by each of T threads at "
              f"once; us of process CPU an email, best of {args.passes}")
        print(f"{'threads':>8} {'archive':>8} {'user':>7} {'system':>7} {'all':>7}")
        for threads in (1, 2, 4):
            for pack in (False, True):
                user, system = min((one_case(runtime, items, threads, pack) for _ in range(args.passes)), key=sum)
                print(f"{threads:>8} {'packed' if pack else 'no':>8} {user * 1e6:7.1f} {system * 1e6:7.1f} "
                      f"{(user + system) * 1e6:7.1f}")
        options = [f"--recipients {args.recipients}", f"--passes {args.passes}",
                   *([f"--dkim {args.dkim}"] if args.dkim else [])]
        print(f"reproduce: {reproduce_command('render_threads.py', options)}")
    finally:
        app.close()
        db.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
