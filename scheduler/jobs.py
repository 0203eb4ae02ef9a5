"""The scheduler's three jobs. They talk to the database and enqueue through functions they are handed.

- ``claim_due``: due campaigns move ``pending -> sending`` (``storage.lifecycle.claim_due``: one
  atomic conditional update, so any number of schedulers dispatch each campaign once) and their
  dispatch is enqueued. A campaign whose ``send_at`` passed while no scheduler ran is claimed once.
- ``reconcile``: finds work that was lost (a killed worker, a flushed Redis) from the ledger and
  enqueues it again, without waiting for Dramatiq's own requeue.
- ``finalise``: campaigns with no open ledger row are closed (``storage.lifecycle.finalise``); a
  letter campaign's ZIP is asked for through ``Enqueue.archive``.
- ``report_progress``: every 10 s, one ``campaign.progress`` line per campaign in flight (counts,
  rate over the last minute, ETA), sampled into the campaign for ``status``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import exists, or_, update
from sqlalchemy.orm import Session, sessionmaker

from storage import lifecycle, progress
from storage.ledger import Batch, open_batches, release_stale
from storage.models import Campaign, Recipient
from storage.statuses import CampaignStatus, RecipientStatus

log = structlog.get_logger()


@dataclass(frozen=True)
class Enqueue:
    """How the scheduler hands work to the workers (the worker package provides these)."""

    dispatch: Callable[[str], None]
    batches: Callable[[list[Batch]], None]
    archive: Callable[[str], None]  # build a letter campaign's ZIP


def claim_due(sessions: sessionmaker[Session], enqueue: Enqueue, now: datetime, limit: int = 100) -> list[str]:
    """Claim approved campaigns whose ``send_at`` has passed and enqueue their dispatch."""
    with sessions.begin() as session:
        claimed = lifecycle.claim_due(session, now, limit)
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
            update(Campaign).where(Campaign.status == CampaignStatus.SENDING, Campaign.dispatched_at.is_(None),
                                   Campaign.updated_at < now - stall)
            .values(updated_at=now).returning(Campaign.id)))
        released = release_stale(session, now, lease)
    for campaign_id in lost:
        enqueue.dispatch(campaign_id)
        redispatched += 1
        log.warning("reconcile.redispatch", campaign_id=campaign_id)

    with sessions.begin() as session:
        # Fanned out, rows still pending, and no row finished for a while: their messages are gone.
        # Rows just taken back from a dead worker go on at once, not a stall later.
        pending = exists().where(Recipient.campaign_id == Campaign.id, Recipient.status == RecipientStatus.PENDING)
        stalled = list(session.scalars(
            update(Campaign).where(Campaign.status == CampaignStatus.SENDING, Campaign.dispatched_at.is_not(None),
                                   or_(Campaign.progress_at < now - stall, Campaign.id.in_(released)), pending)
            .values(progress_at=now).returning(Campaign.id)))
    for campaign_id in stalled:
        with sessions() as session:
            batches = open_batches(session, campaign_id, batch_size)
        enqueue.batches(batches)
        rebatched += len(batches)
        log.warning("reconcile.requeued", campaign_id=campaign_id, batches=len(batches),
                    released_rows_in=campaign_id in released)
    return {"redispatched": redispatched, "requeued_batches": rebatched, "released_campaigns": len(released)}


def finalise(sessions: sessionmaker[Session], enqueue: Enqueue, now: datetime, *, lease: timedelta) -> list[str]:
    """Close every campaign with no open ledger row; a ZIP not built within ``lease`` is asked again."""
    return lifecycle.finalise(sessions, now, enqueue.archive, rerequest_after=lease)


def report_progress(sessions: sessionmaker[Session], now: datetime) -> list[dict]:
    """Sample and log the progress of each campaign in flight, every ``progress.SAMPLE_EVERY`` s."""
    with sessions.begin() as session:
        noted = progress.note_progress(session, now)
    for line in noted:
        log.info("campaign.progress", **line)
    return noted
