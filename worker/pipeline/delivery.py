"""Delivery: one message = one id range of the ledger; claim, re-check, render, send, record.

The ledger rows move ``pending -> sending -> sent | failed | skipped`` by conditional updates,
written after every round of sends (``recorder``), the content sent archived as a campaign message
in the same transaction that marks the row sent. Between rounds the worker looks at the campaign:
paused or cancelled, it stops and gives back the rows it did not attempt. A fault of the whole
campaign (its templates or sending domain no longer work, the relay refuses our login or stays
unreachable, ``MAX_SEND_ERRORS`` failures) pauses it once with a sentence saying what to fix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

import structlog
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from renderers.errors import RenderError
from storage import lifecycle
from storage.errors import ValidationFailed
from storage.contacts import contacts_by_id
from storage.ledger import Batch, Claimed, claim, release, skip_pending
from storage.models import Campaign, User
from storage.statuses import CampaignStatus
from storage.timefmt import now as utcnow
from worker.channels.addressing import NoSendingDomain, UnusableSender
from worker.channels.campaign_runtime import CampaignRuntime
from worker.channels.email import send_emails
from worker.channels.letters import render_letters
from worker.channels.outcomes import CampaignFault, Outcomes, Ready, Rounds
from worker.channels.telephone import create_tasks
from worker.pipeline.app import App
from worker.pipeline.recorder import Round

log = structlog.get_logger()

Retry = Callable[[Batch, int], None]  # (batch, delay in ms)
Channel = Callable[[CampaignRuntime, list[Ready], Rounds], list[Claimed]]

# What building a campaign's runtime raises when the campaign as a whole cannot be sent any more.
CAMPAIGN_FAULTS = (NoSendingDomain, UnusableSender, RenderError, ValidationFailed)


def channel_for(app: App, campaign_type: str) -> Channel:
    """What a campaign type does with the recipients that passed the re-check, handed what it needs."""
    if campaign_type == "email":
        return partial(send_emails, app.smtp, rate=app.send_rate)
    if campaign_type == "letter":
        return partial(render_letters, app.store)
    return create_tasks


_USERS = User.__table__


def _load_contacts(session: Session, ids: list[str]) -> tuple[dict[str, Row], dict[int, Row]]:
    """The batch's contacts and their users, as rows (read-only: a third of the CPU of ORM objects)."""
    contacts = contacts_by_id(session, ids)
    user_ids = {c.user_id for c in contacts.values() if c.user_id is not None}
    users = {u.id: u for u in session.execute(select(_USERS).where(_USERS.c.id.in_(user_ids)))} if user_ids else {}
    return contacts, users


def _fault_sentence(exc: Exception) -> str:
    if isinstance(exc, ValidationFailed):
        return "; ".join(f"{field}: {'; '.join(reasons)}" for field, reasons in exc.errors.items())
    if isinstance(exc, RenderError):
        return f"the campaign's template no longer renders ({exc}): correct the template"
    return str(exc)


def brake(app: App, campaign_id: str, problem: str) -> bool:
    """Pause the campaign for a fault of its own, with a sentence saying what to fix and how to go on."""
    error = (f"Paused: {problem}. Fix this, then `campaign-dispatch campaigns resume {campaign_id}`: "
             "it goes on with the recipients not sent yet.")
    with app.sessions.begin() as session:
        return lifecycle.brake(session, campaign_id, error, utcnow())


class BatchRounds:
    """One batch's rounds: each written as soon as it is over; tells the channel whether to go on."""

    def __init__(self, app: App, batch: Batch, channel: str = "") -> None:
        self.app, self.batch, self.channel = app, batch, channel  # channel: the campaign's type (metrics)
        self.size = app.round_size
        self.recorded = self.sent = self.failed = self.skipped = 0
        self.again: list[tuple[Claimed, str]] = []
        self.status: str = CampaignStatus.SENDING
        self.held: set[int] = set()

    def submit(self, outcomes: Outcomes, wake: asyncio.Future | None = None) -> Round:
        return self.app.recorder.submit(self.batch.campaign_id, outcomes, max_attempts=self.app.settings.max_attempts,
                                        wake=wake, channel=self.channel)

    def settle(self, submitted: list[Round]) -> bool:
        # The status is read behind the round's outcomes, as of after they were written: a pause or
        # cancel stops every thread after the round it had in flight.
        asked = self.app.recorder.ask_status(self.batch.campaign_id)
        self.app.recorder.wait(asked)  # written after every round submitted before it
        for item in submitted:
            written = self.app.recorder.outcome(item)
            outcomes = written.outcomes
            self.recorded += written.done
            self.sent += len(outcomes.sent)
            self.skipped += len(outcomes.skipped)
            self.failed += len(outcomes.failed) + len(outcomes.transient) - len(written.again)
            self.again += written.again
            self.held.difference_update(row_id for row_id, *_ in outcomes.sent)
            self.held.difference_update(row_id for row_id, _ in outcomes.failed + outcomes.skipped)
            self.held.difference_update(row.id for row, _ in outcomes.transient)
        self.status = asked.status or CampaignStatus.CANCELLED
        return self.status == CampaignStatus.SENDING

    def record(self, outcomes: Outcomes) -> bool:
        return self.settle([self.submit(outcomes)] if outcomes else [])

    def still_sending(self) -> bool:
        return self.settle([])

    def give_back(self, rows: list[Claimed]) -> None:
        """Rows claimed but not attempted: skipped when the campaign was cancelled, else pending again
        (the claim not counted as an attempt)."""
        if not rows:
            return
        ids = [row.id for row in rows]
        with self.app.sessions.begin() as session:
            if self.status == CampaignStatus.CANCELLED:
                skip_pending(session, self.batch.campaign_id, "cancelled", utcnow(), ids=ids)
            else:
                release(session, ids, utcnow(), attempted=False)
        log.info("deliver.stopped", status=self.status, given_back=len(rows))


def deliver_batch(app: App, batch: Batch, retry: Retry) -> bool:
    """Deliver one id range of a campaign's ledger. Running it twice does nothing the second time.

    Returns True when a recipient's outcome was recorded (sent, failed, skipped): then the
    campaign may have nothing left open.
    """
    structlog.contextvars.bind_contextvars(campaign_id=batch.campaign_id)
    fault: Exception | None = None
    claimed: list[Claimed] = []
    with app.sessions.begin() as session:
        campaign = session.get(Campaign, batch.campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SENDING:
            log.debug("deliver.skipped", status=getattr(campaign, "status", None))
            return False
        try:  # before claiming: a campaign that cannot be sent any more takes no recipient
            runtime = app.runtimes.get(session, campaign, app.settings.campaign_domain_suffix)
        except CAMPAIGN_FAULTS as exc:
            fault = exc
        else:
            claimed = claim(session, batch, utcnow())
    if fault is not None:
        brake(app, batch.campaign_id, _fault_sentence(fault))
        return False
    if not claimed:
        return False
    rounds = BatchRounds(app, batch, runtime.campaign_type)
    with app.leases.holding(row.id for row in claimed) as held:
        rounds.held = held
        started = time.monotonic()
        with app.sessions() as session:
            contacts, users = _load_contacts(session, [c.contact_id for c in claimed])
        skipped, ready = Outcomes(), []
        for row in claimed:
            contact = contacts.get(row.contact_id)
            reason = runtime.recheck(contact)
            if reason:
                skipped.skipped.append((row.id, reason))
            else:
                ready.append(Ready(row, contact, users.get(contact.user_id)))
        rest: list[Claimed] = []
        if rounds.record(skipped):  # False: the campaign stopped meanwhile
            try:
                rest = channel_for(app, runtime.campaign_type)(runtime, ready, rounds)
            except CampaignFault as exc:
                brake(app, batch.campaign_id, str(exc))
                rounds.status, rest = CampaignStatus.PAUSED, exc.rest
        else:
            rest = [item.row for item in ready]
        rounds.give_back(rest)
    _after(app, batch, rounds, retry)
    log.info("deliver.batch", sent=rounds.sent, failed=rounds.failed, skipped=rounds.skipped,
             retrying=len(rounds.again), given_back=len(rest), seconds=round(time.monotonic() - started, 3))
    return rounds.recorded > 0


def _after(app: App, batch: Batch, rounds: BatchRounds, retry: Retry) -> None:
    """Retry later what failed for now; brake the campaign when too many recipients failed."""
    if rounds.again:
        attempts = max(row.attempts for row, _ in rounds.again)
        delay = min(app.settings.retry_base_seconds * 2 ** (attempts - 1), 3600.0)
        ids = [row.id for row, _ in rounds.again]
        retry(Batch(batch.campaign_id, min(ids), max(ids)), int(delay * 1000))
        log.warning("deliver.retry_later", recipients=len(rounds.again), delay_seconds=delay,
                    reply=rounds.again[0][1])
    limit = app.settings.max_send_errors
    if rounds.failed and limit:
        with app.sessions() as session:
            campaign = session.get(Campaign, batch.campaign_id)
            failed = lifecycle.failed_since_start(session, campaign, limit) if campaign else 0
        if failed >= limit:
            brake(app, batch.campaign_id, f"{failed} recipients failed since the campaign was started or "
                  f"last resumed (MAX_SEND_ERRORS={limit}); `campaign-dispatch campaigns recipients "
                  f"{batch.campaign_id}` shows each one's reason")
