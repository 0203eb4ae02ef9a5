"""Benchmark: a worker SIGKILLed mid-campaign, at the default settings (LEASE_SECONDS, STALL_SECONDS,
SCHEDULER_INTERVAL, DELIVERY_BATCH_SIZE, SMTP_POOL_SIZE as shipped).

One `worker --threads 8` and one `scheduler`, as separate processes, send an email campaign to an SMTP
server in this process (aiosmtpd, 10 ms a message); the worker is SIGKILLed when --kill-at of the
recipients have been received, and a new worker starts at once. Prints how many recipients received
the same message again (the only repeats possible: what was on the wire at the kill), whether any got
two different messages or none, and the seconds from the kill to `completed`. Reproduce with:

    .venv/bin/python benchmarks/worker_kill.py --recipients 3000 --kill-at 0.3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



from benchmarks.harness import BenchDatabase, log  # noqa: E402
from worker.runtime.settings import Settings  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"


class Recorder:
    """aiosmtpd handler: keeps every accepted message's recipients and Message-ID."""

    def __init__(self) -> None:
        self.received: list[tuple[tuple[str, ...], str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(0.01)
        headers = BytesParser(policy=policy.default).parsebytes(envelope.original_content, headersonly=True)
        self.received.append((tuple(envelope.rcpt_tos), headers["Message-ID"]))
        return "250 OK"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=3000)
    parser.add_argument("--kill-at", type=float, default=0.3, help="fraction received when the worker is killed")
    args = parser.parse_args()

    import redis

    from worker.channels.mailcatcher import BoundController

    from storage.migrate import upgrade
    from storage.models import Campaign
    from tests.e2e import bundle, contact, email_payload, load
    from worker.pipeline import campaign_service
    from worker.pipeline.app import App
    from worker.runtime.settings import Settings

    redis.Redis.from_url(REDIS_URL).flushdb()
    handler = Recorder()
    controller = BoundController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    smtp_url = f"smtp://127.0.0.1:{controller.port}"
    database = BenchDatabase("kill")
    db_url = database.create()
    app = App(Settings(database_url=db_url, broker_url=REDIS_URL, smtp_url=smtp_url, log_format="json"))
    procs: list[subprocess.Popen] = []
    try:
        upgrade(app.engine)
        load(app, bundle([contact(i) for i in range(args.recipients)]))
        env = {k: v for k, v in os.environ.items() if k not in (
            "LEASE_SECONDS", "STALL_SECONDS", "SCHEDULER_INTERVAL", "DELIVERY_BATCH_SIZE", "SMTP_POOL_SIZE")}
        env.update(DATABASE_URL=db_url, BROKER_URL=REDIS_URL, SMTP_URL=smtp_url, LOG_FORMAT="json")

        def start(*role: str) -> subprocess.Popen:
            proc = subprocess.Popen([sys.executable, "-c", "from worker.cli.main import main; main()", *role],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            return proc

        start("scheduler")
        worker = start("worker", "--threads", "8")
        time.sleep(3)  # both up before the campaign is due
        with app.sessions.begin() as session:
            campaign_id = campaign_service.create(session, email_payload(), 1).id
        while len(handler.received) < args.kill_at * args.recipients:
            time.sleep(0.005)
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        worker.wait()
        at_kill = len(handler.received)
        log(f"killed the worker at {at_kill} messages; starting another")
        start("worker", "--threads", "8")
        status = None
        while time.monotonic() - killed < 300:
            with app.sessions() as session:
                status = session.get(Campaign, campaign_id).status
            if status == "completed":
                break
            time.sleep(0.1)
        after = time.monotonic() - killed
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        controller.stop()
        app.close()
        database.drop()
    per_rcpt: dict[str, list[str]] = collections.defaultdict(list)
    for rcpts, message_id in handler.received:
        for rcpt in rcpts:
            per_rcpt[rcpt].append(message_id)
    repeats = sum(len(ids) - 1 for ids in per_rcpt.values())
    different = sum(1 for ids in per_rcpt.values() if len(set(ids)) > 1)
    missing = args.recipients - len(per_rcpt)
    print(f"\n== worker SIGKILLed at {at_kill} of {args.recipients} messages (default settings)")
    print(f"status {status}; completed {after:.1f} s after the kill")
    pool = Settings.model_fields["smtp_pool_size"].default
    print(f"identical resends: {repeats} (at most SMTP_POOL_SIZE, default {pool}); recipients with two different messages: "
          f"{different}; missing: {missing}")
    print(f"reproduce: .venv/bin/python benchmarks/worker_kill.py --recipients {args.recipients} --kill-at {args.kill_at}")
    return 0 if status == "completed" and not different and not missing and repeats <= pool else 1


if __name__ == "__main__":
    sys.exit(main())
