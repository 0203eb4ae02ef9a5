"""Delivery: one message = one id range of the ledger; claim, re-check, render, send, record.

The ledger rows move ``pending -> sending -> sent | failed | skipped`` by conditional updates,
written per batch; the content sent is archived as a campaign message in the same transaction
that marks the row sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from renderers.errors import RenderError
from storage.ledger import Batch, Claimed, claim, finish, release
from storage.models import Campaign, CampaignMessage, Contact, User
from storage.timefmt import now as utcnow
from worker.app import App
from worker.smtp import OutgoingMail, PermanentSmtpError, SendResult

log = structlog.get_logger()

Retry = Callable[[Batch, int], None]  # (batch, delay in ms)


@dataclass
class Outcomes:
    """What happened to each claimed row of a batch."""

    sent: list[tuple[int, str, str]] = field(default_factory=list)  # (row id, contact id, content)
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    transient: list[tuple[Claimed, str]] = field(default_factory=list)


def _load_contacts(session: Session, ids: list[str]) -> tuple[dict[str, Contact], dict[int, User]]:
    contacts = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(ids)))}
    user_ids = {c.user_id for c in contacts.values() if c.user_id is not None}
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    return contacts, users


def _archive(session: Session, campaign_id: str, sent: list[tuple[int, str, str]]) -> None:
    if not sent:
        return
    now = utcnow()
    rows = [{"campaign_id": campaign_id, "contact_id": contact_id, "content": content, "created_at": now,
             "updated_at": now} for _, contact_id, content in sent]
    dialect = session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(CampaignMessage)
    session.execute(insert.on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"]), rows)


def deliver_batch(app: App, batch: Batch, retry: Retry) -> None:
    """Deliver one id range of a campaign's ledger. Running it twice does nothing the second time."""
    structlog.contextvars.bind_contextvars(campaign_id=batch.campaign_id)
    with app.sessions.begin() as session:
        campaign = session.get(Campaign, batch.campaign_id)
        if campaign is None or campaign.status != "sending":
            log.info("deliver.skipped", status=getattr(campaign, "status", None))
            return
        claimed = claim(session, batch, utcnow())
        runtime = app.runtimes.get(session, campaign, app.settings.campaign_domain_suffix)
    if not claimed:
        return
    with app.sessions() as session:
        contacts, users = _load_contacts(session, [c.contact_id for c in claimed])

    outcomes = Outcomes()
    outgoing: list[tuple[Claimed, str, OutgoingMail]] = []
    for row in claimed:
        contact = contacts.get(row.contact_id)
        reason = runtime.recheck(contact)
        if reason:
            outcomes.skipped.append((row.id, reason))
            continue
        try:
            email = runtime.email(contact, users.get(contact.user_id))
        except RenderError as exc:
            outcomes.failed.append((row.id, str(exc)))
            log.warning("deliver.render_failed", contact_id=row.contact_id, error=str(exc))
            continue
        outgoing.append((row, email.html, OutgoingMail(email.envelope_from, [email.rcpt], email.data)))

    started = time.monotonic()
    # Send in chunks and stop taking new ones at half the lease, so a slow server can never make
    # reconcile think this worker died and hand its rows to another (which would send them twice).
    deadline = started + app.settings.lease_seconds / 2
    chunk = app.settings.smtp_pool_size * 2
    for start in range(0, len(outgoing), chunk):
        part = outgoing[start:start + chunk]
        if time.monotonic() > deadline:
            outcomes.transient += [(row, "not attempted before the batch's deadline") for row, _, _ in part]
            continue
        for (row, html, _), result in zip(part, app.smtp.send_many([mail for _, _, mail in part])):
            if isinstance(result, SendResult):
                outcomes.sent.append((row.id, row.contact_id, html))
            elif isinstance(result, PermanentSmtpError):
                outcomes.failed.append((row.id, str(result)))
                log.warning("deliver.rejected", contact_id=row.contact_id, reply=str(result))
            else:
                outcomes.transient.append((row, str(result)))
    _record(app, batch, outcomes, retry)
    log.info("deliver.batch", sent=len(outcomes.sent), failed=len(outcomes.failed),
             skipped=len(outcomes.skipped), retrying=len(outcomes.transient),
             smtp_seconds=round(time.monotonic() - started, 3))


def _record(app: App, batch: Batch, outcomes: Outcomes, retry: Retry) -> None:
    now = utcnow()
    give_up = [(row.id, f"gave up after {row.attempts} attempts: {reply}")
               for row, reply in outcomes.transient if row.attempts >= app.settings.max_attempts]
    again = [(row, reply) for row, reply in outcomes.transient if row.attempts < app.settings.max_attempts]
    with app.sessions.begin() as session:
        _archive(session, batch.campaign_id, outcomes.sent)
        finish(session, batch.campaign_id, "sent", [(row_id, None) for row_id, _, _ in outcomes.sent], now)
        finish(session, batch.campaign_id, "failed", outcomes.failed + give_up, now)
        finish(session, batch.campaign_id, "skipped", outcomes.skipped, now)
        release(session, [row.id for row, _ in again], now, reason=again[0][1] if again else None)
    if again:
        attempts = max(row.attempts for row, _ in again)
        delay = min(app.settings.retry_base_seconds * 2 ** (attempts - 1), 3600.0)
        ids = [row.id for row, _ in again]
        retry(Batch(batch.campaign_id, min(ids), max(ids)), int(delay * 1000))
        log.warning("deliver.retry_later", recipients=len(again), delay_seconds=delay, reply=again[0][1])
