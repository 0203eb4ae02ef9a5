"""A worker SIGKILLed in the middle of a letter campaign, then restarted: no letter lost, none twice."""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile

from sqlalchemy import func, select

from storage.models import Campaign, Recipient, StoredFile
from tests.e2e import contact, load, make_app
from tests.worker.test_letters_e2e import letter_bundle, letter_payload
from tests.worker.test_worker_crash import _start_worker
from worker.pipeline import campaign_service
from worker.pipeline.roles import tick


def test_killed_letter_worker_loses_and_duplicates_no_letter(pg_db, redis_url, s3_env, s3_bucket):
    storage_url = f"s3://{s3_bucket}/letters"
    n = 80
    env = {**os.environ, "DATABASE_URL": pg_db, "BROKER_URL": redis_url, "STORAGE_URL": storage_url,
           "DELIVERY_BATCH_SIZE": "4", "LEASE_SECONDS": "4", "STALL_SECONDS": "1", "LOG_FORMAT": "json"}
    env.pop("SMTP_URL", None)
    app = make_app(pg_db, redis_url, None, storage_url=storage_url, lease_seconds=4.0, delivery_batch_size=4)
    load(app, letter_bundle([contact(i, address=f"Street {i}", city="Aarhus") for i in range(n)]))
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, letter_payload(), 1).id

    def sent() -> int:
        with app.sessions() as session:
            return session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id,
                                                             Recipient.status == "sent"))

    worker = _start_worker(env)
    try:
        deadline = time.monotonic() + 90
        while sent() < 12 and time.monotonic() < deadline:
            tick(app)
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert 12 <= sent() < n, "kill the worker mid-campaign"
        worker = _start_worker(env)
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            tick(app)
            with app.sessions() as session:
                status = session.get(Campaign, campaign_id).status
            if status == "completed":
                break
            time.sleep(0.2)
        assert status == "completed"
    finally:
        worker.kill()
        worker.wait()
        app.close()

    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        key = session.get(StoredFile, campaign.letters_file_id).key
    archive = zipfile.ZipFile(io.BytesIO(app.store.get_bytes(key)))
    names = archive.namelist()
    expected = {contact(i)["id"] for i in range(n)}
    found = [next(cid for cid in expected if cid in name) for name in names]
    assert len(names) == n and set(found) == expected  # every letter once
    assert sent() == n
