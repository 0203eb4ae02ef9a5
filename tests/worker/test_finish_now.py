"""A campaign is completed by the worker that records its last recipient (or builds its letters ZIP),
not at the scheduler's next tick: these campaigns are dispatched as the API's execute_now does, by a
message, and no scheduler runs at all."""

from __future__ import annotations

import time

from storage.models import Campaign
from tests.e2e import FINAL, bundle, contact, email_payload, in_process_worker, load, make_app
from tests.worker.test_letters_e2e import letter_bundle, letter_payload
from worker.pipeline import campaign_service


def _dispatched_without_scheduler(app, payload) -> Campaign:
    with app.sessions.begin() as session:
        campaign_id = campaign_service.create(session, payload, 1).id
    with in_process_worker(app) as actors:
        actors.enqueue_dispatch(campaign_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with app.sessions() as session:
                campaign = session.get(Campaign, campaign_id)
            if campaign.status in FINAL:
                return campaign
            time.sleep(0.1)
    raise AssertionError(f"campaign {campaign_id} is still {campaign.status} with no scheduler running")


def test_an_email_campaign_completes_when_its_last_batch_is_recorded(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(25)]))  # three delivery batches of 10
    campaign = _dispatched_without_scheduler(app, email_payload())
    assert (campaign.status, campaign.total_sent, campaign.sent_at is not None) == ("completed", 25, True)
    assert len(smtp_server.messages) == 25


def test_a_letter_campaign_gets_its_zip_and_completes_without_the_scheduler(pg_db, redis_url, tmp_path):
    app = make_app(pg_db, redis_url, None, storage_url=tmp_path.as_uri())
    load(app, letter_bundle([contact(i, address=f"Street {i}", city="Aarhus") for i in range(12)]))
    campaign = _dispatched_without_scheduler(app, letter_payload())
    assert (campaign.status, campaign.total_sent) == ("completed", 12)
    assert campaign.letters_file_id is not None and campaign.archive_requested_at is not None
    assert [p.name for p in tmp_path.rglob("*.zip")] == [f"letters-{campaign.letters_file_id}.zip"]


def test_a_campaign_whose_recipients_are_all_skipped_completes_at_fan_out(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i, consent_email=False) for i in range(3)]))
    campaign = _dispatched_without_scheduler(app, email_payload())
    assert (campaign.status, campaign.total_sent, campaign.skipped) == ("completed", 0, 3)
    assert smtp_server.messages == []
