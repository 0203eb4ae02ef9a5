"""Fan-out on both databases: a campaign is fanned out once however many dispatch messages come, and
its batches cover every pending row once, whether skipped rows lie among them or not."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from storage.models import Recipient
from worker.pipeline import campaign_service, fanout
from tests.e2e import bundle, contact, email_payload, load, make_app


@pytest.fixture
def app(db_url):
    app = make_app(db_url, "memory://", "smtp://127.0.0.1:1", delivery_batch_size=4)
    yield app
    app.close()


def _campaign(app, contacts) -> str:
    load(app, bundle(contacts))
    with app.sessions.begin() as session:
        return campaign_service.create(session, email_payload(execute_now=False, send_at="2099-01-01 00:00:00"), 1).id


def _pending_ids(app, campaign_id: str) -> list[int]:
    with app.sessions() as session:
        return sorted(session.scalars(select(Recipient.id).where(Recipient.campaign_id == campaign_id,
                                                                 Recipient.status == "pending")))


@pytest.mark.parametrize("skipped_among_them", [False, True])
def test_batches_cover_every_pending_row_once(app, skipped_among_them):
    # contact 5 without consent: a skipped row in the middle of the ids (fan-out inserts in contact id order)
    contacts = [contact(i, consent_email=not (skipped_among_them and i == 5)) for i in range(11)]
    campaign_id = _campaign(app, contacts)
    batches: list = []
    fanout.dispatch(app, campaign_id, batches.extend)
    pending = _pending_ids(app, campaign_id)
    covered = [row for b in batches for row in pending if b.first_id <= row <= b.last_id]
    assert sorted(covered) == pending and len(pending) == 11 - skipped_among_them
    assert all(b.campaign_id == campaign_id for b in batches) and len(batches) == 3


def test_a_second_dispatch_message_changes_nothing(app):
    campaign_id = _campaign(app, [contact(i) for i in range(6)])
    first: list = []
    fanout.dispatch(app, campaign_id, first.extend)
    second: list = []
    fanout.dispatch(app, campaign_id, second.extend)  # the API's execute_now and a scheduler, say
    with app.sessions() as session:
        rows = session.scalar(select(func.count()).where(Recipient.campaign_id == campaign_id))
    assert rows == 6 and len(first) == 2 and second == []
