"""Test emails and previews: render one campaign for a person to look at, outside the ledger."""

from __future__ import annotations

import uuid
from datetime import timedelta
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from renderers.pdf import render_pdf
from storage.campaigns import get_campaign
from storage.errors import ValidationFailed
from storage.ledger import skip_reason_of
from storage.models import Campaign, Contact, RelationsPath, StoredFile, User
from storage.objectstore import URL_SECONDS, make_key
from storage.recipients import selected_contacts
from storage.statuses import CampaignStatus
from storage.timefmt import now as utcnow
from storage.validation import check_campaign
from worker.pipeline.app import App
from worker.channels.campaign_runtime import build_runtime, sample_contact
from worker.pipeline.campaign_service import template_errors

log = structlog.get_logger()

def campaign_from_payload(session: Session, payload: Any, user_id: int | None = None) -> Campaign:
    """An unsaved campaign from a create payload, validated for rendering (send_at and task are not
    needed to render, so their errors do not stop a test email or a preview; a valid task is kept
    for a telephone preview)."""
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
                    message=data.message, filter=data.filter, task=data.task,
                    template_id=data.template.id if data.template else None, status=CampaignStatus.DRAFT)


def send_test_email(app: App, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                    user_id: int | None = None) -> None:
    """Render the campaign for an empty sample contact and send it to ``email``, subject ``[TEST] …``."""
    with app.sessions() as session:
        campaign = get_campaign(session, campaign_id) if campaign_id else campaign_from_payload(session, payload, user_id)
        if campaign.type != "email":
            raise ValidationFailed({"type": ["A test email needs an email campaign."]})
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix, app.dkim)
    message = runtime.email(sample_contact(email), None, to=email, subject_prefix="[TEST] ")
    app.smtp.send(message.envelope_from, [message.rcpt], message.data)
    log.info("test_email.sent", campaign_id=campaign.id, to=email)


LOCAL_MAILDIR = Path("var/mail")
"""Where `run`, `demo` and an inline test email capture mail when SMTP_URL is unset (relative to the cwd)."""


@contextmanager
def capturing_mail(app: App, maildir: Path = LOCAL_MAILDIR) -> Iterator[Path]:
    """For the block, the local capturing SMTP server writing into ``maildir`` (as ``run`` starts it),
    with ``app.smtp_url`` pointed at it; yields the Maildir's absolute path. Stopped after the block;
    the mail written stays in the Maildir."""
    from worker.channels.mailcatcher import MailCatcher  # aiosmtpd: only for an inline test email

    catcher = MailCatcher(Path(maildir).resolve())
    app.smtp_url = catcher.start()
    try:
        yield catcher.maildir
    finally:
        catcher.stop()


def build_preview(app: App, campaign_id: str) -> dict[str, str]:
    """Render the stored campaign for its first recipient (or an empty sample) and store it (HTML for
    email, PDF for a letter, an HTML summary of the calls for a telephone campaign); return
    ``{"download_url"}``, valid for 300 s."""
    with app.sessions.begin() as session:
        return _store_preview(app, session, get_campaign(session, campaign_id))


def build_payload_preview(app: App, payload: Any, user_id: int | None = None) -> dict[str, str]:
    """As ``build_preview``, for the unsaved campaign a create payload describes (the seed's
    ``POST /campaigns/preview``); the payload is validated as for a test email."""
    with app.sessions.begin() as session:
        return _store_preview(app, session, campaign_from_payload(session, payload, user_id))


def _store_preview(app: App, session: Session, campaign: Campaign) -> dict[str, str]:
    """Render ``campaign`` for its first recipient, put it in the store and record it as a file in
    ``session`` (committed by the caller)."""
    contact = first_recipient(session, campaign)
    file_id = str(uuid.uuid4())
    if campaign.type == "telephone":  # no message: a page of what the campaign will do
        body = telephone_preview(session, campaign, contact).encode("utf-8")
        extension, content_type = "html", "text/html; charset=utf-8"
    else:
        runtime = build_runtime(session, campaign, app.settings.campaign_domain_suffix)
        user = session.get(User, contact.user_id) if contact is not None and contact.user_id else None
        rendered = runtime.render(contact or sample_contact(), user)
        if campaign.type == "letter":  # a letter previews as the PDF it will be
            body, extension, content_type = render_pdf(rendered.html), "pdf", "application/pdf"
        else:
            body, extension, content_type = rendered.html.encode("utf-8"), "html", "text/html; charset=utf-8"
    name = f"campaign-{campaign.id}.{extension}"
    key = make_key("previews", campaign.id, f"{file_id}.{extension}")
    _forget_expired_previews(app, session)
    size = app.store.put_bytes(key, body, content_type)
    session.add(StoredFile(id=file_id, key=key, name=name, content_type=content_type, size=size))
    return {"download_url": app.store.url(key, URL_SECONDS, filename=name)}


def _forget_expired_previews(app: App, session: Session, most: int = 100) -> None:
    """Delete up to ``most`` previews whose download URL has expired (files and their rows). A
    preview is reachable only through the URL it was made with (its file id is never shown), so
    once that URL expired it is garbage; each new preview clears some, so they never pile up.
    Best effort: a store that fails leaves them for the next preview, and the preview goes on."""
    cutoff = utcnow() - timedelta(seconds=URL_SECONDS)
    expired = session.scalars(select(StoredFile).where(StoredFile.key.like("previews/%"),
                                                       StoredFile.created_at < cutoff).limit(most)).all()
    for stored in expired:
        try:
            app.store.delete(stored.key)
        except Exception as exc:  # noqa: BLE001 - cleaning up must never cost the user their preview
            log.warning("preview.cleanup_failed", key=stored.key, error=str(exc))
            return
        session.delete(stored)


def first_recipient(session: Session, campaign: Campaign) -> Contact | None:
    """The first contact (by id) the campaign's filter selects."""
    return session.scalars(selected_contacts(session, campaign).order_by(Contact.id).limit(1)).first()



STRATEGIES = {
    "distribute": "distribute: the reached contacts are dealt round-robin over the users below",
    "responsible_user": "responsible_user: a contact goes to its own responsible user when listed below, "
                        "the others round-robin over the users below",
}


def _text(value: Any) -> str:
    """Escaped text for the preview page (every value is user data)."""
    return escape("" if value is None else str(value), quote=True)


def _person(*parts: str | None) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def _contact_item(contact: Contact | None, campaign_type: str) -> str:
    if contact is None:
        return "<p>No contact matches the filter.</p>"
    name = _person(contact.first_name, contact.last_name) or contact.account_name or contact.id
    phone = contact.mobile_phone_number or contact.landline_phone_number
    reason = skip_reason_of(campaign_type, contact)
    rows = [("Name", _text(name)), ("Phone number", _text(phone) if phone else "<em>none</em>"),
            ("Contact id", _text(contact.id))]
    if reason:
        rows.append(("Note", f"this contact would be skipped ({_text(reason)})"))
    return _definitions(rows)


def _definitions(rows: list[tuple[str, str]]) -> str:
    """A <dl> of (label, already escaped HTML) pairs."""
    return "<dl>" + "".join(f"<dt>{_text(label)}</dt><dd>{value}</dd>" for label, value in rows) + "</dl>"


def telephone_preview(session: Session, campaign: Campaign, contact: Contact | None) -> str:
    """An HTML page of what a telephone campaign will do: its first recipient and its task (who gets
    the calls, on which relations path, when). Every value is escaped."""
    task = campaign.task or {}
    if campaign.task:
        ids = list(task.get("distribute_users") or [])
        found = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))} if ids else {}
        users = "".join(
            f"<li>{_text(_person(found[uid].first_name, found[uid].last_name) or found[uid].email or f'user {uid}')}"
            f" <small>(user {_text(uid)})</small></li>" if uid in found else f"<li>unknown user {_text(uid)}</li>"
            for uid in ids)
        strategy = task.get("distribution_strategy")
        path_id = task.get("relations_path")
        path = session.get(RelationsPath, path_id) if path_id else None
        path_html = (f"{_text(path.name)} <small>({_text(path_id)})</small>" if path is not None and path.name
                     else _text(path_id) if path_id else "<em>none</em>")
        task_html = _definitions([
            ("Distribution strategy", _text(STRATEGIES.get(strategy, strategy))),
            ("Distributed to", f"<ul>{users}</ul>" if users else "<em>no users</em>"),
            ("Relations path", path_html),
            ("Start", _text(task.get("start_at")) if task.get("start_at") else "<em>not set</em>"),
            ("End", _text(task.get("end_at")) if task.get("end_at") else "<em>not set</em>"),
        ])
    else:
        task_html = "<p>The campaign has no task yet: it creates no calls until one is set.</p>"
    name = _text(campaign.name)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>Preview: {name}</title></head><body>\n"
        f"<h1>{name}</h1>\n"
        f"<p>Telephone campaign ({_text(campaign.status)}): each contact the filter selects that can be called "
        "(a phone number, no refused call consent) becomes a call task for one of the users below.</p>\n"
        f"<h2>First recipient</h2>\n{_contact_item(contact, campaign.type)}\n"
        f"<h2>Task</h2>\n{task_html}\n"
        "</body></html>\n"
    )
