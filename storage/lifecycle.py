"""Every campaign status transition, in one place.

```
draft ──approve + send_at──> pending ──claim (scheduler, or a direct dispatch)──> sending ──finalise──> completed | failed
  │                            │  ^                                                │  ^
  │                            │  └──────────── resume (not yet dispatched) ───┐    │  └── resume
  │                            └──────────── pause ────────────────────────> paused <── pause, brake
  └─────── cancel (from draft, pending, sending or paused) ──────────────> cancelled ──finalise──> (settled)
           dispatch finds the campaign unsendable: sending ──> failed (nothing was sent)
```

A brake is a pause by the service itself: a fault of the whole campaign while it sends (the relay
refuses our login, the sending domain is gone, a template no longer renders, the relay unreachable
past the retry budget, ``MAX_SEND_ERRORS`` recipients failed since the start or the last resume)
pauses it once, with an ``error`` saying what to fix; ``resume`` clears it and goes on.

Each transition is a conditional UPDATE (``... WHERE status IN (<from>)``) or runs on a row locked
for update, so two processes racing on one campaign move it once: schedulers claiming due
campaigns, a worker and a scheduler finalising, a person pausing while a worker finalises. The
recipients' own transitions (``pending -> sending -> sent | failed | skipped``) are in
``storage.ledger``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import Conflict
from storage.ledger import has_rows, skip_pending
from storage.models import Campaign, Recipient
from storage.statuses import EDITABLE, OPEN, CampaignStatus as S, RecipientStatus as R
from storage.tasks import deal_tasks

log = structlog.get_logger()

EPOCH = datetime(1970, 1, 1)


def initial_status(approved: bool, send_at: datetime | None) -> S:
    """``pending`` once approved with a send time (the scheduler will take it), else ``draft``."""
    return S.PENDING if approved and send_at is not None else S.DRAFT


def ensure_editable(campaign: Campaign, action: str) -> None:
    """Refuse ``action`` (update, delete) on a campaign that has been dispatched (CONTRACT: exit 4)."""
    if campaign.status not in EDITABLE:
        raise Conflict(f"campaign {campaign.id} is {campaign.status}: a campaign that is already sent "
                       f"cannot be {action}")


def _move(session: Session, campaign: Campaign, allowed: Iterable[S], target: S, action: str,
          now: datetime, **values: Any) -> Campaign:
    """A conditional status change; Conflict when the campaign is not in an ``allowed`` state."""
    result = session.execute(
        update(Campaign).where(Campaign.id == campaign.id, Campaign.status.in_(tuple(allowed)))
        .values(status=target, updated_at=now, **values)
    )
    session.refresh(campaign)
    if result.rowcount != 1:
        raise Conflict(f"campaign {campaign.id} is {campaign.status}: it cannot be {action}")
    return campaign


# -- before dispatch -------------------------------------------------------------------------------

def send_now(session: Session, campaign: Campaign, now: datetime) -> Campaign:
    """``draft | pending -> pending``, due now (the API's ``execute_now``, ``campaigns send``)."""
    if not campaign.approved:
        raise Conflict(f"campaign {campaign.id} is not approved: approve it before sending")
    return _move(session, campaign, (S.DRAFT, S.PENDING), S.PENDING, "sent now", now, send_at=now)


def claim_due(session: Session, now: datetime, limit: int = 100) -> list[str]:
    """``pending -> sending`` for approved campaigns whose ``send_at`` has passed; their ids.

    One conditional UPDATE over a ``FOR UPDATE SKIP LOCKED`` subquery (PostgreSQL), so any number
    of schedulers claim each campaign once. A campaign due while no scheduler ran is simply due.
    """
    due = select(Campaign.id).where(Campaign.status == S.PENDING, Campaign.approved.is_(True),
                                    Campaign.send_at <= now).order_by(Campaign.send_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    return list(session.scalars(
        update(Campaign).where(Campaign.id.in_(due.scalar_subquery()), Campaign.status == S.PENDING)
        .values(status=S.SENDING, updated_at=now).returning(Campaign.id)))


def claim_for_dispatch(campaign: Campaign, now: datetime) -> bool:
    """On a campaign row locked for update: ``pending -> sending`` when it was enqueued directly
    (a scheduler that claimed it first changed the status already). True when the campaign is
    ``sending`` and not fanned out yet, i.e. this dispatch is to fan it out."""
    if campaign.status == S.PENDING and campaign.approved:
        campaign.status = S.SENDING
        if campaign.send_at is None or campaign.send_at > now:
            campaign.send_at = now
    return campaign.status == S.SENDING and campaign.dispatched_at is None


def mark_dispatched(campaign: Campaign, total: int, skipped: int, now: datetime) -> None:
    """The campaign's ledger is written: it stays ``sending``, with its first counters."""
    campaign.total, campaign.skipped = total, skipped
    campaign.dispatched_at = campaign.progress_at = now


def fail_unsendable(campaign: Campaign, problems: list[str]) -> None:
    """``sending -> failed`` before anything is sent, with a sentence a person can act on."""
    campaign.status = S.FAILED
    campaign.error = ("The campaign was not sent: " + "; ".join(problems)
                      + ". Copy the campaign, fix this and schedule the copy.")


# -- while sending -------------------------------------------------------------------------------

def pause(session: Session, campaign: Campaign, now: datetime) -> Campaign:
    """``pending | sending -> paused``: no new recipient is taken; workers stop after their SMTP
    round in flight and give the rest of their rows back."""
    moved = _move(session, campaign, (S.PENDING, S.SENDING), S.PAUSED, "paused", now)
    log.info("campaign.paused", campaign_id=campaign.id)
    return moved


def resume(session: Session, campaign: Campaign, now: datetime) -> Campaign:
    """``paused -> sending`` (``pending`` when it was paused before its dispatch), the brake's
    ``error`` cleared and the send-error count started again. The caller re-enqueues the open rows;
    ``progress_at`` is set far back so reconcile does too, should that message be lost."""
    target = S.SENDING if campaign.dispatched_at is not None else S.PENDING
    moved = _move(session, campaign, (S.PAUSED,), target, "resumed", now,
                  progress_at=EPOCH.replace(tzinfo=now.tzinfo), error=None, resumed_at=now)
    log.info("campaign.resumed", campaign_id=campaign.id, status=moved.status)
    return moved


def brake(session: Session, campaign_id: str, error: str, now: datetime) -> bool:
    """``sending -> paused`` with ``error``: a fault of the whole campaign, not of one recipient.
    True for the one caller that moved it (workers hitting the same fault race; one wins)."""
    moved = session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == S.SENDING)
        .values(status=S.PAUSED, error=error, updated_at=now)
    ).rowcount == 1
    if moved:
        log.error("campaign.braked", campaign_id=campaign_id, error=error)
    return moved


def failed_since_start(session: Session, campaign: Campaign, limit: int) -> int:
    """How many recipients failed since the campaign was dispatched or last resumed (counted up to
    ``limit``: enough to tell whether ``MAX_SEND_ERRORS`` is reached)."""
    since = campaign.resumed_at or campaign.dispatched_at or EPOCH
    rows = (select(Recipient.id).where(Recipient.campaign_id == campaign.id, Recipient.status == R.FAILED,
                                       Recipient.updated_at >= since).limit(limit).subquery())
    return session.scalar(select(func.count()).select_from(rows)) or 0


def cancel(session: Session, campaign: Campaign, now: datetime) -> Campaign:
    """``draft | pending | sending | paused -> cancelled``: rows not yet taken are skipped (reason
    ``cancelled``); finalise settles the campaign once its rows in flight are done."""
    _move(session, campaign, (S.DRAFT, S.PENDING, S.SENDING, S.PAUSED), S.CANCELLED, "cancelled", now)
    skipped = skip_pending(session, campaign.id, "cancelled", now)
    if skipped:
        session.execute(update(Campaign).where(Campaign.id == campaign.id)
                        .values(skipped=Campaign.skipped + skipped))
        session.refresh(campaign)
    log.info("campaign.cancelled", campaign_id=campaign.id, skipped=skipped)
    return campaign


# -- finalise --------------------------------------------------------------------------------------

def finalise(sessions: sessionmaker[Session], now: datetime, request_archive: Callable[[str], None], *,
             rerequest_after: timedelta, campaign_ids: list[str] | None = None) -> list[str]:
    """Close fanned-out campaigns that have no open ledger row (of ``campaign_ids`` only, when
    given); the ids of those closed.

    ``sending -> completed`` (``failed`` when nothing could be sent), with ``sent_at``,
    ``total_sent`` and, when recipients failed, an ``error`` naming the most common reason. A
    ``cancelled`` campaign stays cancelled but is settled. Either way what its delivered recipients
    are owed happens first (tasks dealt; a letter campaign's ZIP, asked for with ``request_archive``
    and waited for: asked again after ``rerequest_after``), its counters come from the ledger, and
    ``finalised_at`` is set, once.

    Schedulers and workers may run it at once for one campaign: the campaign's row is locked
    (PostgreSQL) and checked again, so each campaign is finalised, and its ZIP asked for, once.
    """
    done: list[str] = []
    with sessions() as session:
        open_rows = exists().where(Recipient.campaign_id == Campaign.id, Recipient.status.in_(OPEN))
        unsettled = and_(Campaign.status == S.CANCELLED, Campaign.finalised_at.is_(None))
        query = select(Campaign.id).where(or_(Campaign.status == S.SENDING, unsettled),
                                          Campaign.dispatched_at.is_not(None), ~open_rows)
        if campaign_ids is not None:
            query = query.where(Campaign.id.in_(campaign_ids))
        candidates = list(session.scalars(query))
    for campaign_id in candidates:
        with sessions.begin() as session:
            campaign = session.get(Campaign, campaign_id, with_for_update=True)
            if campaign is None or campaign.status not in (S.SENDING, S.CANCELLED) or campaign.finalised_at:
                continue  # another finaliser was first
            if _waits_for_archive(session, campaign, now, request_archive, rerequest_after):
                continue
            if campaign.task:  # once, when nothing else is waited for (dealing is idempotent anyway)
                deal_tasks(session, campaign, now)
            was = campaign.status
            counts = _counts(session, campaign_id)
            sent, failed, total = counts.get(R.SENT, 0), counts.get(R.FAILED, 0), sum(counts.values())
            values = {"total_sent": sent, "sent": sent, "failed": failed, "skipped": counts.get(R.SKIPPED, 0),
                      "total": total, "finalised_at": now, "updated_at": now}
            status = was
            if was == S.SENDING:
                status = S.FAILED if failed and not sent else S.COMPLETED
                error = _failure_summary(session, campaign_id, failed, total) if failed else None
                values.update(status=status, sent_at=now, error=error)
            changed = session.execute(
                update(Campaign).where(Campaign.id == campaign_id, Campaign.status == was,
                                       Campaign.finalised_at.is_(None)).values(**values)
            ).rowcount
        if changed:
            done.append(campaign_id)
            log.info("campaign.finalised", campaign_id=campaign_id, status=status, sent=sent, failed=failed)
    return done


def _waits_for_archive(session: Session, campaign: Campaign, now: datetime,
                       request_archive: Callable[[str], None], rerequest_after: timedelta) -> bool:
    """A letter campaign that sent letters waits for its ZIP, asked for once per ``rerequest_after``.
    One that sent nothing (all failed or skipped) has no letters to zip."""
    if campaign.type != "letter" or campaign.letters_file_id is not None:
        return False
    if not has_rows(session, campaign.id, (R.SENT,)):
        return False
    asked = campaign.archive_requested_at
    if asked is None or asked < now - rerequest_after:
        campaign.archive_requested_at = now
        session.flush()
        request_archive(campaign.id)
    return True


def _counts(session: Session, campaign_id: str) -> dict[str, int]:
    return dict(session.execute(select(Recipient.status, func.count())
                                .where(Recipient.campaign_id == campaign_id).group_by(Recipient.status)).all())


def _failure_summary(session: Session, campaign_id: str, failed: int, total: int) -> str:
    reason, count = session.execute(
        select(Recipient.reason, func.count()).where(Recipient.campaign_id == campaign_id,
                                                     Recipient.status == R.FAILED)
        .group_by(Recipient.reason).order_by(func.count().desc()).limit(1)).one()
    return (f"{failed} of {total} recipients failed; the most common reason ({count}): {reason}. "
            "`campaign-dispatch campaigns recipients` lists each recipient's reason.")
