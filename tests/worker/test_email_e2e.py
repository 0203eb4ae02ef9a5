"""Email campaigns end to end: scheduler, Redis broker, worker, aiosmtpd, PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from email import policy
from email.parser import BytesParser

from sqlalchemy import select

from scheduler.jobs import Enqueue, claim_due
from storage import campaigns as repo
from storage.campaign_messages import list_messages
from storage.models import Campaign, Recipient
from storage.timefmt import now
from tests.e2e import bundle, contact, drive, email_payload, in_process_worker, load, make_app
from tests.cli import CliRunner
from worker.pipeline import campaign_service, fanout
from worker.pipeline.actors import DELIVERY_QUEUE


def _create(app, payload) -> str:
    with app.sessions.begin() as session:
        return campaign_service.create(session, payload, 1).id


def _ledger(app, campaign_id) -> dict[str, tuple[str, str | None]]:
    with app.sessions() as session:
        rows = session.execute(select(Recipient.contact_id, Recipient.status, Recipient.reason)
                               .where(Recipient.campaign_id == campaign_id)).all()
    return {cid: (status, reason) for cid, status, reason in rows}


def _parse(data: bytes):
    return BytesParser(policy=policy.default).parsebytes(data)


def test_sends_each_selected_recipient_once_with_the_right_headers(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    contacts = [contact(i) for i in range(25)]
    contacts += [
        contact(100, first_name="<script>alert(1)</script>"),
        contact(101, consent_email=False),
        contact(102, email=None),
        contact(103, email="not an address"),
        contact(104, last_name="Other"),  # not selected by the filter
    ]
    load(app, bundle(contacts))
    campaign_id = _create(app, email_payload())
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"

    selected = {c["id"] for c in contacts if c["fixed_fields"][1]["value"] == "Larsen"}
    ledger = _ledger(app, campaign_id)
    assert set(ledger) == selected
    assert ledger[str(uuid.UUID(int=10_101))] == ("skipped", "no_consent")
    assert ledger[str(uuid.UUID(int=10_102))] == ("skipped", "no_email")
    assert ledger[str(uuid.UUID(int=10_103))] == ("skipped", "invalid_email")

    rcpts = [r for m in smtp_server.messages for r in m.rcpt_tos]
    expected = {f"person{i}@example.com" for i in [*range(25), 100]}
    assert sorted(rcpts) == sorted(expected)  # each exactly once

    by_rcpt = {m.rcpt_tos[0]: _parse(m.data) for m in smtp_server.messages}
    msg = by_rcpt["person3@example.com"]
    assert msg["From"] == "noreply@acme.easircampaigns.com"
    assert msg["Reply-To"] == "news@acme.example"
    assert msg["Subject"] == "Hi Person3"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<https://acme.example/unsubscribe?")
    assert smtp_server.messages[0].envelope_from == "noreply@acme.easircampaigns.com"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "<div class='wrap'><p>Dear Person3 (gold)</p></div>" in html and "unsubscribe" in html
    assert "Dear Person3 (gold)" in text
    hostile = by_rcpt["person100@example.com"].get_body(("html",)).get_content()
    assert "<script>" not in hostile and "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile
    message_ids = {m["Message-ID"] for m in by_rcpt.values()}
    assert len(message_ids) == len(by_rcpt)

    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign.total_sent == 26 and campaign.sent_at is not None
        assert repo.progress_of(session, campaign) == {"total": 29, "sent": 26, "failed": 0, "skipped": 3,
                                                       "pending": 0}
        archived, total = list_messages(session, campaign_id, page=1, per_page=100)
        assert total == 26 and len(archived) == 26 and all("Dear" in m["content"] for m in archived)


def test_custom_domain_sender(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(1)], domain="acme.example"))
    campaign_id = _create(app, email_payload())
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"
    msg = _parse(smtp_server.messages[0].data)
    assert msg["From"] == "news@acme.example" and msg["Reply-To"] is None


def test_transient_421_is_retried_and_550_fails_one_recipient(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(6)]))
    smtp_server.script("person1@example.com", "421 try again later", times=2)  # within the batch's own retries
    smtp_server.script("person2@example.com", "451 greylisted", times=5)  # outlasts them: retried later
    smtp_server.script("person3@example.com", "550 no such user", times=None)
    campaign_id = _create(app, email_payload())
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"
    delivered = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert delivered == sorted(f"person{i}@example.com" for i in (0, 1, 2, 4, 5))
    ledger = _ledger(app, campaign_id)
    status, reason = ledger[str(uuid.UUID(int=10_003))]
    assert status == "failed" and reason.startswith("550") and "no such user" in reason
    with app.sessions() as session:
        attempts = session.scalar(select(Recipient.attempts).where(Recipient.contact_id == str(uuid.UUID(int=10_002))))
        shown = repo.campaign_to_seed(session, session.get(Campaign, campaign_id))
    assert attempts >= 2
    assert shown["status"] == "completed" and shown["total_sent"] == 5
    assert "550" in shown["error"] and "1 of 6 recipients failed" in shown["error"]


def test_template_failing_at_render_fails_recipients_and_show_explains(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(3)]))
    # Compiles and names only known variables, but divides by zero when rendered.
    payload = email_payload(message={"subject": "Hi", "sender": "news@acme.example",
                                     "content": "{{ 10 // (contact.id | length - 36) }}"})
    campaign_id = _create(app, payload)
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "failed"
    assert smtp_server.messages == []
    with app.sessions() as session:
        shown = repo.campaign_to_seed(session, session.get(Campaign, campaign_id),
                                      repo.progress_of(session, session.get(Campaign, campaign_id)))
    assert shown["progress"]["failed"] == 3 and shown["progress"]["sent"] == 0
    assert "division by zero" in shown["error"] or "divi" in shown["error"]
    assert all(status == "failed" for status, _ in _ledger(app, campaign_id).values())


def test_campaign_without_domain_fails_before_sending(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(1)]))
    campaign_id = _create(app, email_payload())
    with app.sessions.begin() as session:  # the settings change after the campaign was created
        from storage.models import CampaignSettings

        settings = session.get(CampaignSettings, 1)
        settings.domain_slug = None
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "failed"
    assert smtp_server.messages == []
    with app.sessions() as session:
        error = session.get(Campaign, campaign_id).error
    assert "no sending domain" in error and "Copy the campaign" in error


def test_two_schedulers_dispatch_each_campaign_once(pg_db, redis_url):
    app_a, app_b = make_app(pg_db, redis_url, None), make_app(pg_db, redis_url, None)
    load(app_a, bundle([contact(1)]))
    ids = [_create(app_a, email_payload(name=f"c{i}")) for i in range(30)]
    dispatched: list[str] = []
    lock = threading.Lock()

    def record(campaign_id: str) -> None:
        with lock:
            dispatched.append(campaign_id)

    enqueue = Enqueue(dispatch=record, batches=lambda batches: None, archive=lambda campaign_id: None)
    barrier = threading.Barrier(2)

    def scheduler(app):
        barrier.wait()
        for _ in range(20):
            claim_due(app.sessions, enqueue, now(), limit=3)

    threads = [threading.Thread(target=scheduler, args=(a,)) for a in (app_a, app_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(dispatched) == sorted(ids)
    with app_a.sessions() as session:
        assert {c.status for c in session.scalars(select(Campaign))} == {"sending"}


def test_scheduler_down_for_hours_dispatches_once(pg_db, redis_url, smtp_server):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(3)]))
    campaign_id = _create(app, email_payload())
    with app.sessions.begin() as session:  # due long ago: every tick since was missed
        from datetime import timedelta

        session.get(Campaign, campaign_id).send_at = now() - timedelta(hours=6)
    with in_process_worker(app) as actors:
        assert drive(app, campaign_id) == "completed"
        assert drive(app, campaign_id) == "completed"
    assert len(smtp_server.messages) == 3


def test_a_paused_campaign_sends_nothing_until_resumed_then_each_recipient_once(pg_db, redis_url, smtp_server,
                                                                                 monkeypatch, capsys):
    app = make_app(pg_db, redis_url, smtp_server.url)
    load(app, bundle([contact(i) for i in range(25)]))
    campaign_id = _create(app, email_payload())
    batches = []
    fanout.dispatch(app, campaign_id, batches.extend)  # fanned out; its delivery messages not sent yet
    cli = CliRunner(monkeypatch, capsys, DATABASE_URL=pg_db, BROKER_URL=redis_url, SMTP_URL=smtp_server.url)
    assert cli("campaigns", "pause", campaign_id).json["status"] == "paused"
    with in_process_worker(app) as actors:
        actors.enqueue_batches(batches)
        actors.broker.join(DELIVERY_QUEUE, timeout=20_000)  # every delivery message taken: none sent
        assert smtp_server.messages == []
        assert set(_ledger(app, campaign_id).values()) == {("pending", None)}
        assert cli("campaigns", "resume", campaign_id).json["status"] == "sending"
        assert drive(app, campaign_id) == "completed"
    rcpts = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert rcpts == sorted(f"person{i}@example.com" for i in range(25))
