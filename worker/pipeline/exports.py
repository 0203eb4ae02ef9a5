"""XLSX export of a campaign's recipients: streamed from the database in pages into storage."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session

from renderers.xlsx import write_xlsx
from storage.campaigns import get_campaign
from storage.errors import NotFound
from storage.fields import CONSENT_CHANNELS, FIXED_FIELDS
from storage.models import Contact, Export, StoredFile
from storage.objectstore import make_key
from storage.recipients import iter_recipients
from storage.statuses import ExportStatus, RecipientStatus
from storage.timefmt import fmt, now as utcnow
from worker.pipeline.app import App

log = structlog.get_logger()

HEADER = (["Contact ID"] + [field.label for field in FIXED_FIELDS]
          + [f"{channel.capitalize()} consent" for channel in CONSENT_CHANNELS]
          + ["Delivery status", "Delivery reason", "Delivery at"])


# What a row reads of each contact (storage.recipients.iter_recipients adds the delivery).
COLUMNS = (Contact.id, *(getattr(Contact, field.name) for field in FIXED_FIELDS), Contact.consent)


def _consent(consent: dict | None, channel: str) -> str:
    given = ((consent or {}).get(channel) or {}).get("consent_given")
    return "" if given is None else ("yes" if given else "no")


def recipient_row(row: tuple[Any, ...]) -> list[Any]:
    """One spreadsheet row from a ``COLUMNS`` + delivery row: the contact's id and fixed fields,
    consent per channel, delivery state (``pending`` before the campaign took its recipients)."""
    contact_id, *fixed = row[:len(FIXED_FIELDS) + 1]
    consent, status, reason, at = row[len(FIXED_FIELDS) + 1:]
    delivery = [status, reason, fmt(at)] if status is not None else [RecipientStatus.PENDING.value, None, None]
    return [contact_id, *fixed, *(_consent(consent, channel) for channel in CONSENT_CHANNELS), *delivery]


def export_to_seed(export: Export) -> dict[str, Any]:
    """The seed's export shape (plus ``reason`` when it failed)."""
    shape: dict[str, Any] = {"export_id": export.id, "file_id": export.file_id, "status": export.status}
    if export.status == ExportStatus.FAILED:
        shape["reason"] = export.error
    return shape


def start_export(session: Session, campaign_id: str) -> Export:
    """Record a pending export of the campaign's recipients."""
    campaign = get_campaign(session, campaign_id)
    export = Export(id=str(uuid.uuid4()), campaign_id=campaign.id, status=ExportStatus.PENDING)
    session.add(export)
    session.flush()
    return export


def get_export(session: Session, campaign_id: str, export_id: str) -> Export:
    """An export of the campaign, or NotFound."""
    campaign = get_campaign(session, campaign_id)
    export = session.get(Export, export_id)
    if export is None or export.campaign_id != campaign.id:
        raise NotFound(f"export {export_id} of campaign {campaign_id} not found")
    return export


class _Settled(Exception):
    """The export was no longer pending when its file was ready (another run settled it)."""


def run_export(app: App, campaign_id: str, export_id: str) -> None:
    """Write the XLSX (constant memory, keyset pages) and store it; the export ends done or failed.

    Only a pending export of this campaign is run: a message naming an export that does not exist
    (or one already done, delivered twice) stores no file. A file finished after another run
    settled the export is deleted again, never left in the store unrecorded."""
    with app.sessions() as session:
        try:
            status = get_export(session, campaign_id, export_id).status
        except NotFound as exc:
            log.warning("export.skipped", campaign_id=campaign_id, export_id=export_id, reason=str(exc))
            return
    if status != ExportStatus.PENDING:
        log.warning("export.skipped", campaign_id=campaign_id, export_id=export_id, reason=f"already {status}")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="cd-export-") as tmp:
            path = Path(tmp) / "recipients.xlsx"
            with app.sessions() as session:
                campaign = get_campaign(session, campaign_id)
                rows = map(recipient_row, iter_recipients(session, campaign, COLUMNS))
                count = write_xlsx(path, "Recipients", HEADER, rows)
            file_id = str(uuid.uuid4())
            key = make_key("exports", campaign_id, f"{file_id}.xlsx")
            with path.open("rb") as source, app.store.open_writer(
                    key, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
            size = path.stat().st_size
        with app.sessions.begin() as session:
            session.add(StoredFile(id=file_id, key=key, name=f"recipients-{campaign_id}.xlsx",
                                   content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                                   size=size))
            session.flush()
            moved = session.execute(update(Export).where(Export.id == export_id,
                                                         Export.status == ExportStatus.PENDING)
                                    .values(status=ExportStatus.DONE, file_id=file_id, updated_at=utcnow()))
            if moved.rowcount != 1:
                raise _Settled  # rolls the file's row back with it
        log.info("export.done", campaign_id=campaign_id, export_id=export_id, rows=count, bytes=size)
    except _Settled:
        app.store.delete(key)
        log.warning("export.skipped", campaign_id=campaign_id, export_id=export_id, reason="settled meanwhile")
    except Exception as exc:  # noqa: BLE001 - the export records why it failed, for the user
        with app.sessions.begin() as session:
            session.execute(update(Export).where(Export.id == export_id, Export.status == ExportStatus.PENDING)
                            .values(status=ExportStatus.FAILED, error=f"{type(exc).__name__}: {exc}", updated_at=utcnow()))
        log.error("export.failed", campaign_id=campaign_id, export_id=export_id, error=str(exc))
