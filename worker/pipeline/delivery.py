"""Delivery: one message = one id range of the ledger; claim, re-check, render, send, record.

The ledger rows move ``pending -> sending -> sent | failed | skipped`` by conditional updates,
written per batch; the content sent is archived as a campaign message in the same transaction
that marks the row sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import dialect_insert
from storage.ledger import Batch, claim, finish, release, touch_progress
from storage.models import Campaign, CampaignMessage, Contact, User
from storage.statuses import CampaignStatus, RecipientStatus
from storage.timefmt import now as utcnow
from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.email import send_emails
from worker.channels.letters import render_letters
from worker.channels.outcomes import Outcomes, Ready
from worker.channels.telephone import create_tasks
from worker.pipeline.app import App

log = structlog.get_logger()

Retry = Callable[[Batch, int], None]  # (batch, delay in ms)
Channel = Callable[[CampaignRuntime, list[Ready], Outcomes], None]


def channel_for(app: App, campaign_type: str) -> Channel:
    """What a campaign type does with the recipients that passed the re-check, handed what it needs."""
    if campaign_type == "email":
        return partial(send_emails, app.smtp, send_seconds=app.settings.lease_seconds / 2)
    if campaign_type == "letter":
        return partial(render_letters, app.store)
    return create_tasks


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
             "updated_at": now} for _, contact_id, content in sent if content is not None]
    if not rows:  # telephone: nothing was sent as content
        return
    session.execute(dialect_insert(session, CampaignMessage).on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"]), rows)


def deliver_batch(app: App, batch: Batch, retry: Retry) -> bool:
    """Deliver one id range of a campaign's ledger. Running it twice does nothing the second time.

    Returns True when a recipient's outcome was recorded (sent, failed, skipped): then the
    campaign may have nothing left open.
    """
    structlog.contextvars.bind_contextvars(campaign_id=batch.campaign_id)
    with app.sessions.begin() as session:
        campaign = session.get(Campaign, batch.campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SENDING:
            log.info("deliver.skipped", status=getattr(campaign, "status", None))
            return False
        claimed = claim(session, batch, utcnow())
        runtime = app.runtimes.get(session, campaign, app.settings.campaign_domain_suffix)
    if not claimed:
        return False
    with app.sessions() as session:
        contacts, users = _load_contacts(session, [c.contact_id for c in claimed])

    outcomes = Outcomes()
    ready: list[Ready] = []
    for row in claimed:
        contact = contacts.get(row.contact_id)
        reason = runtime.recheck(contact)
        if reason:
            outcomes.skipped.append((row.id, reason))
        else:
            ready.append(Ready(row, contact, users.get(contact.user_id)))
    started = time.monotonic()
    channel_for(app, runtime.campaign_type)(runtime, ready, outcomes)
    recorded = _record(app, batch, outcomes, retry)
    log.info("deliver.batch", sent=len(outcomes.sent), failed=len(outcomes.failed),
             skipped=len(outcomes.skipped), retrying=len(outcomes.transient),
             channel_seconds=round(time.monotonic() - started, 3))
    return recorded > 0


def _record(app: App, batch: Batch, outcomes: Outcomes, retry: Retry) -> int:
    """Write the batch's outcomes; the number of rows that reached a final status."""
    now = utcnow()
    give_up = [(row.id, f"gave up after {row.attempts} attempts: {reply}")
               for row, reply in outcomes.transient if row.attempts >= app.settings.max_attempts]
    again = [(row, reply) for row, reply in outcomes.transient if row.attempts < app.settings.max_attempts]
    with app.sessions.begin() as session:
        _archive(session, batch.campaign_id, outcomes.sent)
        done = finish(session, RecipientStatus.SENT, [(row_id, None) for row_id, _, _ in outcomes.sent], now,
                      artifact_key=outcomes.artifact_key)
        done += finish(session, RecipientStatus.FAILED, outcomes.failed + give_up, now)
        done += finish(session, RecipientStatus.SKIPPED, outcomes.skipped, now)
        release(session, [row.id for row, _ in again], now, reason=again[0][1] if again else None)
    if done:
        with app.sessions.begin() as session:  # its own short transaction: the campaign row is shared
            touch_progress(session, batch.campaign_id, now, timedelta(seconds=1))
    if again:
        attempts = max(row.attempts for row, _ in again)
        delay = min(app.settings.retry_base_seconds * 2 ** (attempts - 1), 3600.0)
        ids = [row.id for row, _ in again]
        retry(Batch(batch.campaign_id, min(ids), max(ids)), int(delay * 1000))
        log.warning("deliver.retry_later", recipients=len(again), delay_seconds=delay, reply=again[0][1])
    return done

