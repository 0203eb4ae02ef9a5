"""A worker process SIGKILLed mid-campaign and restarted: nobody missing, nobody sent a different message twice."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser

from sqlalchemy import func, select

from storage.models import Campaign, Recipient
from tests.e2e import bundle, contact, email_payload, load, make_app
from worker.pipeline import campaign_service
from worker.pipeline.roles import tick as run_scheduler_jobs

THREADS, BATCH = 4, 5


def _start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from worker.cli.main import main; main()", "worker",
                             "--threads", str(THREADS)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_killed_worker_loses_and_duplicates_nothing(pg_db, redis_url, smtp_server):
    env = {**os.environ, "DATABASE_URL": pg_db, "BROKER_URL": redis_url, "SMTP_URL": smtp_server.url,
           "DELIVERY_BATCH_SIZE": str(BATCH), "LEASE_SECONDS": "3", "STALL_SECONDS": "1", "LOG_FORMAT": "json"}
    app = make_app(pg_db, redis_url, smtp_server.url, lease_seconds=3.0, delivery_batch_size=BATCH)
    n = 600
    load(app, bundle([contact(i) for i in range(n)]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, email_payload(), 1).id

    def tick() -> str:
        run_scheduler_jobs(app)
        with app.sessions() as session:
            return session.get(Campaign, campaign_id).status

    worker = _start_worker(env)
    try:
        deadline = time.monotonic() + 60
        while len(smtp_server.messages) < 60 and time.monotonic() < deadline:
            tick()
            time.sleep(0.01)
        assert len(smtp_server.messages) >= 60, "the worker never got going"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        killed_at = len(smtp_server.messages)
        with app.sessions() as session:
            in_flight = session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id,
                                                                  Recipient.status == "sending"))
        assert killed_at < n, "the campaign finished before the kill: make it bigger"

        worker = _start_worker(env)
        deadline = time.monotonic() + 90
        while tick() != "completed" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tick() == "completed"
    finally:
        worker.kill()
        worker.wait()
        app.close()

    message_ids: dict[str, set[str]] = collections.defaultdict(set)
    deliveries = collections.Counter()
    for received in smtp_server.messages:
        parsed = BytesParser(policy=policy.default).parsebytes(received.data, headersonly=True)
        for rcpt in received.rcpt_tos:
            deliveries[rcpt] += 1
            message_ids[rcpt].add(parsed["Message-ID"])
    assert set(deliveries) == {f"person{i}@example.com" for i in range(n)}  # none missing
    # Each recipient only ever got one message (one Message-ID); the only repeats are rows that were
    # in flight at the kill (accepted by SMTP, not yet recorded), resent identically.
    assert all(len(ids) == 1 for ids in message_ids.values())
    repeats = sum(deliveries.values()) - n
    assert repeats <= max(in_flight, THREADS * BATCH)
    with app.sessions() as session:
        statuses = dict(session.execute(select(Recipient.status, func.count())
                                        .where(Recipient.campaign_id == campaign_id).group_by(Recipient.status)).all())
    assert statuses == {"sent": n}
