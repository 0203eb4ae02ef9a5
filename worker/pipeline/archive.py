"""A letter campaign's ZIP: its parts (one per delivery batch) streamed into one archive in storage,
recorded, the campaign's user notified, the parts deleted."""

from __future__ import annotations

import html
import io
import uuid
import zipfile

import structlog
from sqlalchemy import select, update

from renderers.errors import RenderError
from renderers.mime import build_email
from renderers.zipstream import safe_entry_name, write_zip
from storage.models import Campaign, CampaignSettings, Contact, Recipient, StoredFile, User
from storage.objectstore import ObjectMissing, make_key
from storage.statuses import RecipientStatus
from worker.channels.addressing import NoSendingDomain, sender_for
from worker.channels.letters import parts_folder
from worker.pipeline.app import App

log = structlog.get_logger()


class LetterMissing(RuntimeError):
    """A recipient is marked sent but no stored part holds its PDF."""


def build_archive(app: App, campaign_id: str) -> str | None:
    """Stream every sent letter of the campaign into one ZIP in storage; return its file id.

    Memory holds one part (a batch's PDFs) at a time. Safe to run twice: a campaign that has its
    ZIP is left alone. All the campaign's parts are deleted once the ZIP is recorded.
    """
    if _nothing_to_build(app, campaign_id):
        return None
    file_id = str(uuid.uuid4())
    key = make_key("letters", campaign_id, f"letters-{file_id}.zip")
    written: set[bytes] = set()  # write_zip's: the names it wrote, which the next name must avoid
    parts: list[str] = []
    with app.sessions() as session:
        rows = session.execute(
            select(Recipient.id, Recipient.contact_id, Recipient.artifact_key, Contact.first_name, Contact.last_name)
            .join(Contact, Contact.id == Recipient.contact_id)
            .where(Recipient.campaign_id == campaign_id, Recipient.status == RecipientStatus.SENT)
            .order_by(Recipient.artifact_key, Recipient.id).execution_options(yield_per=500))

        def entries():
            part: zipfile.ZipFile | None = None
            for row_id, contact_id, artifact_key, first, last in rows:
                if artifact_key is None:
                    raise LetterMissing(f"recipient {row_id} of campaign {campaign_id} is sent but names no stored PDF")
                if not parts or parts[-1] != artifact_key:  # rows come grouped by part
                    part = zipfile.ZipFile(io.BytesIO(app.store.get_bytes(artifact_key)))
                    parts.append(artifact_key)
                hint = "-".join(bit for bit in (last, first) if bit)
                yield safe_entry_name(contact_id, hint, written, register=False), part.read(f"{row_id}.pdf")

        try:
            with app.store.open_writer(key, "application/zip") as target:
                count = write_zip(target, entries(), seen=written)
        except ObjectMissing:
            if _nothing_to_build(app, campaign_id):  # another worker built it meanwhile, parts removed
                return None
            raise
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
    log.info("letters.archived", campaign_id=campaign_id, letters=count, bytes=size, parts=len(parts))
    _delete_parts(app, campaign_id)
    notify_owner(app, campaign_id, count)
    return file_id


def _nothing_to_build(app: App, campaign_id: str) -> bool:
    """The campaign has its ZIP already, or is gone."""
    with app.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        return campaign is None or campaign.letters_file_id is not None


def _delete_parts(app: App, campaign_id: str) -> None:
    try:
        app.store.delete_all(parts_folder(campaign_id))
    except Exception as exc:  # noqa: BLE001 - the ZIP is ready; leftover parts only take space
        log.warning("letters.parts_not_deleted", campaign_id=campaign_id, error=str(exc))


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
        if app.dkim is not None:
            data = app.dkim.sign(data, sender.domain)
        app.smtp.send(sender.from_addr, [user.email], data)
    except (NoSendingDomain, RenderError, Exception) as exc:  # noqa: BLE001 - the ZIP is ready regardless
        log.warning("letters.notify_failed", campaign_id=campaign_id, error=str(exc))
