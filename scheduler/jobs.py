"""The scheduler's three jobs. They talk to the database and enqueue through functions they are handed.

- ``claim_due``: one atomic conditional update moves due campaigns ``pending -> sending`` (with
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any number of schedulers dispatch each campaign once.
  A campaign whose ``send_at`` passed while no scheduler ran is simply due: it is claimed once.
- ``reconcile``: finds work that was lost (a killed worker, a flushed Redis) from the ledger and
  enqueues it again, without waiting for Dramatiq's own requeue.
- ``finalise``: a campaign with no open ledger row is ``completed`` (or ``failed`` when nothing
  could be sent), with ``sent_at`` and ``total_sent``; a cancelled one is settled (its delivered
  recipients' tasks and letters, its counters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.ledger import OPEN, Batch, open_batches, release_stale
from storage.models import Campaign, Recipient

log = structlog.get_logger()


@dataclass(frozen=True)
class Enqueue:
    """How the scheduler hands work to the workers (the worker package provides these)."""

    dispatch: Callable[[str], None]
    batches: Callable[[list[Batch]], None]


def claim_due(sessions: sessionmaker[Session], enqueue: Enqueue, now: datetime, limit: int = 100) -> list[str]:
    """Claim approved campaigns whose ``send_at`` has passed and enqueue their dispatch."""
    with sessions.begin() as session:
        due = select(Campaign.id).where(Campaign.status == "pending", Campaign.approved.is_(True),
                                        Campaign.send_at <= now).order_by(Campaign.send_at).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claimed = list(session.scalars(
            update(Campaign).where(Campaign.id.in_(due.scalar_subquery()), Campaign.status == "pending")
            .values(status="sending", updated_at=now).returning(Campaign.id)
        ))
    for campaign_id in claimed:
        enqueue.dispatch(campaign_id)
        log.info("campaign.claimed", campaign_id=campaign_id)
    return claimed


def reconcile(sessions: sessionmaker[Session], enqueue: Enqueue, now: datetime, *, lease: timedelta,
              stall: timedelta, batch_size: int) -> dict[str, int]:
    """Re-enqueue lost work: dispatches never run, rows held by dead workers, stalled campaigns."""
    redispatched = rebatched = 0
    with sessions.begin() as session:
        # Claimed but never fanned out (the dispatch message was lost).
        lost = list(session.scalars(
            update(Campaign).where(Campaign.status == "sending", Campaign.dispatched_at.is_(None),
                                   Campaign.updated_at < now - stall)
            .values(updated_at=now).returning(Campaign.id)))
        released = release_stale(session, now, lease)
    for campaign_id in lost:
        enqueue.dispatch(campaign_id)
        redispatched += 1
        log.warning("reconcile.redispatch", campaign_id=campaign_id)

    with sessions.begin() as session:
        # Fanned out, rows still pending, and no row finished for a while: their messages are gone.
        pending = exists().where(Recipient.campaign_id == Campaign.id, Recipient.status == "pending")
        stalled = list(session.scalars(
            update(Campaign).where(Campaign.status == "sending", Campaign.dispatched_at.is_not(None),
                                   Campaign.progress_at < now - stall, pending)
            .values(progress_at=now).returning(Campaign.id)))
    for campaign_id in stalled:
        with sessions() as session:
            batches = open_batches(session, campaign_id, batch_size)
        enqueue.batches(batches)
        rebatched += len(batches)
        log.warning("reconcile.requeued", campaign_id=campaign_id, batches=len(batches),
                    released_rows_in=campaign_id in released)
    return {"redispatched": redispatched, "requeued_batches": rebatched, "released_campaigns": len(released)}


def finalise(sessions: sessionmaker[Session], now: datetime,
             before_complete: Callable[[Session, Campaign], bool] | None = None,
             campaign_ids: list[str] | None = None) -> list[str]:
    """Close fanned-out campaigns that have no open ledger row (of ``campaign_ids`` only, when given).

    A ``sending`` campaign becomes ``completed`` (``failed`` when nothing could be sent). A
    ``cancelled`` one stays cancelled but is settled once its rows in flight are done: what its
    delivered recipients are owed still happens (tasks dealt, letters zipped) and its counters come
    from the ledger. Either way ``finalised_at`` is set, once.

    ``before_complete`` may do channel work first (a letter campaign's ZIP) and return False to wait.
    Schedulers and workers may run it at once for one campaign: the campaign's row is locked
    (PostgreSQL) and checked again, so the hook runs for a campaign still to be finalised only.
    """
    done: list[str] = []
    with sessions() as session:
        open_rows = exists().where(Recipient.campaign_id == Campaign.id, Recipient.status.in_(OPEN))
        unsettled = and_(Campaign.status == "cancelled", Campaign.finalised_at.is_(None))
        query = select(Campaign.id).where(or_(Campaign.status == "sending", unsettled),
                                          Campaign.dispatched_at.is_not(None), ~open_rows)
        if campaign_ids is not None:
            query = query.where(Campaign.id.in_(campaign_ids))
        candidates = list(session.scalars(query))
    for campaign_id in candidates:
        with sessions.begin() as session:
            campaign = session.get(Campaign, campaign_id, with_for_update=True)
            if campaign is None or campaign.status not in ("sending", "cancelled") or campaign.finalised_at:
                continue  # another finaliser was first
            if before_complete is not None and not before_complete(session, campaign):
                continue
            was = campaign.status
            counts = dict(session.execute(select(Recipient.status, func.count())
                                          .where(Recipient.campaign_id == campaign_id).group_by(Recipient.status)).all())
            sent, failed = counts.get("sent", 0), counts.get("failed", 0)
            values = {"total_sent": sent, "sent": sent, "failed": failed, "skipped": counts.get("skipped", 0),
                      "total": sum(counts.values()), "finalised_at": now, "updated_at": now}
            status = was
            if was == "sending":
                status = "failed" if failed and not sent else "completed"
                error = _failure_summary(session, campaign_id, failed, sum(counts.values())) if failed else None
                values.update(status=status, sent_at=now, error=error)
            changed = session.execute(
                update(Campaign).where(Campaign.id == campaign_id, Campaign.status == was,
                                       Campaign.finalised_at.is_(None)).values(**values)
            ).rowcount
        if changed:
            done.append(campaign_id)
            log.info("campaign.finalised", campaign_id=campaign_id, status=status, sent=sent, failed=failed)
    return done


def _failure_summary(session: Session, campaign_id: str, failed: int, total: int) -> str:
    reason, count = session.execute(
        select(Recipient.reason, func.count()).where(Recipient.campaign_id == campaign_id, Recipient.status == "failed")
        .group_by(Recipient.reason).order_by(func.count().desc()).limit(1)).one()
    return (f"{failed} of {total} recipients failed; the most common reason ({count}): {reason}. "
            "`campaign-dispatch campaigns recipients` lists each recipient's reason.")
