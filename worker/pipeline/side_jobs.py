"""Test emails and previews: render one campaign for a person to look at, outside the ledger."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy.orm import Session

from renderers.pdf import render_pdf
from storage.campaigns import get_campaign
from storage.errors import ValidationFailed
from storage.models import Campaign, Contact, StoredFile, User
from storage.objectstore import URL_SECONDS, make_key
from storage.recipients import selected_contacts
from storage.statuses import CampaignStatus
from storage.timefmt import now as utcnow
from storage.validation import check_campaign
from worker.pipeline.app import App
from worker.channels.campaign_runtime import build_runtime
from worker.pipeline.campaign_service import template_errors

log = structlog.get_logger()

SAMPLE_CONTACT_ID = "00000000-0000-0000-0000-000000000000"


def campaign_from_payload(session: Session, payload: Any, user_id: int | None = None) -> Campaign:
    """An unsaved campaign from a create payload, validated for rendering (send_at and task are not
    needed to render, so their errors do not stop a test email)."""
    data, errors = check_campaign(payload, session, now=utcnow(), mode="create")
    if data is not None:
        errors = template_errors(data.message, data.template)
    errors = {k: v for k, v in errors.items() if not k.startswith(("send_at", "task"))}
    if errors:
        raise ValidationFailed(errors)
    if data is None:  # only send_at/task problems: take the fields as given
        payload = {**payload, "send_at": None, "task": None, "execute_now": True}
        data, _ = check_campaign(payload, session, now=utcnow(), mode="create")
    assert data is not None
    return Campaign(id=str(uuid.uuid4()), user_id=user_id or 0, name=data.name, type=data.type,
                    message=data.message, filter=data.filter,
                    template_id=data.template.id if data.template else None, status=CampaignStatus.DRAFT)


def _sample_contact(email: str | None = None) -> Contact:
    return Contact(id=SAMPLE_CONTACT_ID, b2c=True, email=email, custom_fields={}, consent={})


def send_test_email(app: App, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                    user_id: int | None = None) -> None:
    """Render the campaign for an empty sample contact and send it to ``email``, subject ``[TEST] …``."""
    with app.sessions() as session:
        campaign = get_campaign(session, campaign_id) if campaign_id else campaign_from_payload(session, payload, user_id)
        if campaign.type != "email":
            raise ValidationFailed({"type": ["A test email needs an email campaign."]})
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix)
    message = runtime.email(_sample_contact(email), None, to=email, subject_prefix="[TEST] ")
    app.smtp.send(message.envelope_from, [message.rcpt], message.data)
    log.info("test_email.sent", campaign_id=campaign.id, to=email)


def build_preview(app: App, campaign_id: str) -> dict[str, str]:
    """Render the campaign for its first recipient (or an empty sample) and store it (HTML for email,
    PDF for a letter); return a URL valid for 300 s."""
    with app.sessions.begin() as session:
        campaign = get_campaign(session, campaign_id)
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix)
        contact = first_recipient(session, campaign)
        user = session.get(User, contact.user_id) if contact is not None and contact.user_id else None
        rendered = runtime.render(contact or _sample_contact(), user)
        file_id = str(uuid.uuid4())
        if campaign.type == "letter":  # a letter previews as the PDF it will be
            body, extension, content_type = render_pdf(rendered.html), "pdf", "application/pdf"
        else:
            body, extension, content_type = rendered.html.encode("utf-8"), "html", "text/html; charset=utf-8"
        name = f"campaign-{campaign.id}.{extension}"
        key = make_key("previews", campaign.id, f"{file_id}.{extension}")
        size = app.store.put_bytes(key, body, content_type)
        session.add(StoredFile(id=file_id, key=key, name=name, content_type=content_type, size=size))
    return {"download_url": app.store.url(key, URL_SECONDS, filename=name)}


def first_recipient(session: Session, campaign: Campaign) -> Contact | None:
    """The first contact (by id) the campaign's filter selects."""
    return session.scalars(selected_contacts(session, campaign).order_by(Contact.id).limit(1)).first()

