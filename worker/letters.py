"""The letter channel: a PDF per recipient into storage; when all are done, one streamed ZIP."""

from __future__ import annotations

import html
import uuid

import structlog
from sqlalchemy import select, update

from renderers.errors import RenderError
from renderers.mime import build_email
from renderers.pdf import render_pdf, render_pdfs
from renderers.zipstream import safe_entry_name, write_zip
from storage.models import Campaign, CampaignSettings, Contact, Recipient, StoredFile, User
from storage.objectstore import make_key
from worker.addressing import NoSendingDomain, sender_for
from worker.app import App
from worker.campaign_runtime import CampaignRuntime
from worker.outcomes import Outcomes, Ready

log = structlog.get_logger()


def letter_key(campaign_id: str, contact_id: str) -> str:
    """Where one recipient's PDF is stored (derived from ids only)."""
    return make_key("letters", campaign_id, f"{contact_id}.pdf")


def _pdfs(htmls: list[str]) -> list[bytes | RenderError]:
    try:
        return list(render_pdfs(htmls))
    except RenderError:  # one bad letter: render one by one so the others still go out
        results: list[bytes | RenderError] = []
        for html in htmls:
            try:
                results.append(render_pdf(html))
            except RenderError as exc:
                results.append(exc)
        return results


def render_letters(app: App, runtime: CampaignRuntime, ready: list[Ready], outcomes: Outcomes) -> None:
    """Render each recipient's letter (laid out in batches), store its PDF, archive its HTML."""
    rendered: list[tuple[Ready, str]] = []
    for item in ready:
        try:
            rendered.append((item, runtime.render(item.contact, item.user).html))
        except RenderError as exc:
            outcomes.failed.append((item.row.id, str(exc)))
    for (item, markup), pdf in zip(rendered, _pdfs([markup for _, markup in rendered])):
        if isinstance(pdf, RenderError):
            outcomes.failed.append((item.row.id, f"PDF: {pdf}"))
            continue
        try:
            app.store.put_bytes(letter_key(runtime.campaign_id, item.contact.id), pdf, "application/pdf")
        except Exception as exc:  # noqa: BLE001 - storage unreachable: try this recipient again later
            outcomes.transient.append((item.row, f"storage: {exc}"))
            continue
        outcomes.sent.append((item.row.id, item.contact.id, markup))


def build_archive(app: App, campaign_id: str) -> str | None:
    """Stream every stored letter of the campaign into one ZIP in storage; return its file id.

    Memory holds one PDF at a time. Safe to run twice: a campaign that has its ZIP is left alone.
    """
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.letters_file_id is not None:
            return None
    file_id = str(uuid.uuid4())
    key = make_key("letters", campaign_id, f"letters-{file_id}.zip")
    used: set[str] = set()
    with app.sessions() as session:
        rows = session.execute(
            select(Recipient.contact_id, Contact.first_name, Contact.last_name)
            .join(Contact, Contact.id == Recipient.contact_id)
            .where(Recipient.campaign_id == campaign_id, Recipient.status == "sent")
            .order_by(Recipient.id).execution_options(yield_per=500))

        def entries():
            for contact_id, first, last in rows:
                hint = "-".join(part for part in (last, first) if part)
                yield (safe_entry_name(contact_id, hint, used),
                       lambda cid=contact_id: app.store.get_bytes(letter_key(campaign_id, cid)))

        with app.store.open_writer(key, "application/zip") as target:
            count = write_zip(target, entries())
    size = app.store.size(key)
    with app.sessions.begin() as session:
        session.add(StoredFile(id=file_id, key=key, name=f"letters-{campaign_id}.zip",
                               content_type="application/zip", size=size))
        session.flush()
        won = session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.letters_file_id.is_(None))
                              .values(letters_file_id=file_id)).rowcount
    if not won:  # another worker finished first: keep theirs
        app.store.delete(key)
        return None
    log.info("letters.archived", campaign_id=campaign_id, letters=count, bytes=size)
    notify_owner(app, campaign_id, count)
    return file_id


def notify_owner(app: App, campaign_id: str, letters: int) -> None:
    """Tell the campaign's user that the letters are ready: a log event, and an email when SMTP is set."""
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        user = session.get(User, campaign.user_id)
        settings = session.get(CampaignSettings, 1)
    log.info("letters.ready", campaign_id=campaign_id, letters=letters, user_id=campaign.user_id)
    if not app.smtp_configured or user is None or not user.email:
        return
    try:
        sender = sender_for(settings, None, app.settings.campaign_domain_suffix)
        text = (f"The {letters} letters of campaign \"{campaign.name}\" are ready as one ZIP file.\n"
                f"Get a download link (valid for 5 minutes) with: campaign-dispatch campaigns letters {campaign.id}\n")
        data = build_email(from_addr=sender.from_addr, to_addr=user.email,
                           subject=f"Your letters are ready: {campaign.name}", text=text,
                           html="<p>" + html.escape(text).replace("\n", "<br>") + "</p>",
                           message_id=f"<letters.{campaign.id}@{sender.domain}>")
        app.smtp.send(sender.from_addr, [user.email], data)
    except (NoSendingDomain, RenderError, Exception) as exc:  # noqa: BLE001 - the ZIP is ready regardless
        log.warning("letters.notify_failed", campaign_id=campaign_id, error=str(exc))
