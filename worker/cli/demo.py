"""``campaign-dispatch demo``: sample data and campaigns through the real path, on the embedded default."""

from __future__ import annotations

import random
from datetime import timedelta
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from storage import campaigns as repo
from storage.models import StoredFile, Task
from storage.loader import load_bundle
from storage.migrate import upgrade
from storage.timefmt import fmt, now
from worker.pipeline import campaign_service
from storage.statuses import CampaignStatus
from worker.channels.mailcatcher import MailCatcher
from worker.pipeline.app import App
from worker.pipeline.roles import running_worker, tick

FIRST = ["Anna", "Søren", "Zoë", "José", "Chloé", "Mads", "Noëlle", "Åse", "Björn", "Léa", "Ole", "Renée"]
LAST = ["Østergaard", "Brontë", "Dvořák", "Hansen", "Müller", "Larsen", "Gaël", "Nielsen", "Sørensen", "Ibáñez"]
CITIES = ["København", "Aarhus", "Odense", "Malmö", "Zürich"]


def _contact(i: int, rnd: random.Random) -> dict[str, Any]:
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    email = f"{first.lower()}.{i}@example.com".encode("ascii", "ignore").decode()
    if i % 17 == 0:
        email = None  # skipped: no_email
    elif i % 23 == 0:
        email = "not-an-address"  # skipped: invalid_email
    fields = {"first_name": first, "last_name": last, "email": email,
              "address": None if i % 11 == 0 else f"Vestergade {i}", "city": rnd.choice(CITIES),
              "zip_code": f"{1000 + i}", "mobile_phone_number": None if i % 13 == 0 else f"+45{20000000 + i}"}
    consent = {channel: {"consent_given": not (channel == "email" and i % 19 == 0), "updated_at": ""}
               for channel in ("email", "letter", "call", "sms")}
    return {
        "id": str(uuid.UUID(int=i + 1)), "b2c": True, "account": None, "user": {"id": 1 + i % 3},
        "team_id": 1, "status": None, "custom_fields": {"segment": rnd.choice(["gold", "silver"])},
        "fixed_fields": [{"name": k, "value": v} for k, v in fields.items()], "consent": consent,
        "created_at": "2026-01-01 10:00:00", "updated_at": "2026-01-01 10:00:00",
    }


def demo_bundle(contacts: int = 60) -> dict[str, Any]:
    """Settings, a team, three users, an email template and ``contacts`` contacts (deterministic)."""
    rnd = random.Random(7)
    users = [{"id": n, "first_name": name, "last_name": "Demo", "email": f"{name.lower()}@acme.example",
              "team_id": 1, "job_title": "Sales"} for n, name in ((1, "Doe"), (2, "Florian"), (3, "Dorris"))]
    bundle = {
        "settings": {"domain": None, "domain_slug": "acme",
                     "consent": {"custom": True, "unsubscribe_url": "https://acme.example/unsubscribe"}},
        "teams": [{"id": 1, "name": "Sales"}],
        "users": users,
        "templates": [{"id": 2, "type": "email", "company_id": 1, "title": "Email template", "user_id": 1,
                       "content": "<html><body><h1>ACME news</h1>{{ content }}</body></html>"},
                      {"id": 3, "type": "letter", "company_id": 1, "title": "Letter template", "user_id": 1,
                       "content": "<html><body><p><strong>ACME A/S</strong>, Vestergade 1, Aarhus</p>"
                                  "{{ content }}<p>Kind regards, {{ sender.first_name }}</p></body></html>"}],
        "relations_paths": [{"id": "9eae431b-3d0f-4528-9c59-e9d1a40fcd04", "name": "Default"}],
        "contacts": [_contact(i, rnd) for i in range(contacts)],
    }
    return bundle


def email_payload() -> dict[str, Any]:
    return {
        "name": f"Demo email {fmt(now())}", "type": "email", "approved": True, "execute_now": True,
        "message": {"subject": "Hello {{ contact.first_name }}", "sender": "news@acme.example",
                    "content": "<p>Dear {{ contact.first_name }} {{ contact.last_name }},</p>"
                               "<p>our {{ contact.custom_fields.segment }} offer is ready.</p>"},
        "filter": [{"field": "contact.fixed_fields.last_name", "operator": "nempty"}],
        "template_id": 2,
    }


def letter_payload() -> dict[str, Any]:
    return {
        "name": f"Demo letter {fmt(now())}", "type": "letter", "approved": True, "execute_now": True,
        "message": {"content": "<p>{{ contact.first_name }} {{ contact.last_name }}<br>{{ contact.address }}<br>"
                               "{{ contact.zip_code }} {{ contact.city }}</p><p>Dear {{ contact.first_name }},</p>"
                               "<p>your {{ contact.custom_fields.segment }} membership renews next month.</p>"},
        "filter": [{"field": "contact.custom_fields.segment", "operator": "eq", "value": "gold"}],
        "template_id": 3,
    }


def telephone_payload() -> dict[str, Any]:
    start = now() + timedelta(days=1)
    return {
        "name": f"Demo call round {fmt(now())}", "type": "telephone", "approved": True, "execute_now": True,
        "filter": [{"field": "contact.custom_fields.segment", "operator": "eq", "value": "silver"}],
        "task": {"distribution_strategy": "distribute", "distribute_users": [1, 2, 3],
                 "relations_path": "9eae431b-3d0f-4528-9c59-e9d1a40fcd04",
                 "start_at": fmt(start), "end_at": fmt(start + timedelta(days=7))},
    }


def _summary(app: App, campaign_id: str) -> dict[str, Any]:
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        summary: dict[str, Any] = {"id": campaign.id, "name": campaign.name, "type": campaign.type,
                                   "status": campaign.status, "progress": repo.progress_of(session, campaign)}
        if campaign.error:
            summary["error"] = campaign.error
        if campaign.type == "letter" and campaign.letters_file_id:
            file = session.get(StoredFile, campaign.letters_file_id)
            summary["letters_zip"] = app.store.url(file.key)
        if campaign.task:
            per_user = session.execute(select(Task.user_id, func.count()).where(Task.campaign_id == campaign.id)
                                       .group_by(Task.user_id).order_by(Task.user_id)).all()
            summary["tasks_per_user"] = {str(user): count for user, count in per_user}
    return summary


def run_demo(app: App, *, timeout: float = 120.0) -> dict[str, Any]:
    """Load the sample data; run an email, a letter and a telephone campaign through scheduler, broker,
    worker, SMTP and storage; summarise where everything went."""
    revision = upgrade(app.engine)
    counts = load_bundle(app.sessions, demo_bundle())
    maildir = Path("var/mail").resolve()
    catcher = MailCatcher(maildir)
    app.smtp_url = catcher.start()
    try:
        with app.sessions.begin() as session:
            ids = [campaign_service.create(session, payload, 1).id
                   for payload in (email_payload(), letter_payload(), telephone_payload())]
        with running_worker(app, threads=4, idle_poll_ms=100):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                tick(app)
                with app.sessions() as session:
                    statuses = {repo.get_campaign(session, cid).status for cid in ids}
                if statuses <= {CampaignStatus.COMPLETED, CampaignStatus.FAILED, CampaignStatus.CANCELLED}:
                    break
                time.sleep(0.2)
        summaries = [_summary(app, cid) for cid in ids]
    finally:
        catcher.stop()
    return {
        "database": app.settings.database_url,
        "loaded": counts,
        "schema_revision": revision,
        "campaigns": summaries,
        "mail": {"maildir": str(maildir), "messages_in_maildir": catcher.count,
                 "smtp": "local capturing server (SMTP_URL unset)"},
        "try": [f"campaign-dispatch campaigns show {ids[0]}",
                f"campaign-dispatch campaigns recipients {ids[0]}",
                f"campaign-dispatch campaigns messages {ids[0]}",
                f"campaign-dispatch campaigns letters {ids[1]}",
                f"campaign-dispatch campaigns tasks {ids[2]}"],
    }
