"""What must happen before a campaign is completed: its tasks dealt, a letter campaign's ZIP built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from storage.models import Campaign, Recipient
from storage.timefmt import now as utcnow
from worker.tasks import deal_tasks


def before_complete(enqueue_archive: Callable[[str], None], rerequest_after: float) -> Callable[[Session, Campaign], bool]:
    """The scheduler's finalise hook. Returns False while the campaign must wait (its ZIP is being built)."""

    def hook(session: Session, campaign: Campaign) -> bool:
        if campaign.type == "letter" and campaign.letters_file_id is None and _any_sent(session, campaign.id):
            now = utcnow()
            asked = campaign.archive_requested_at
            if asked is None or asked < now - timedelta(seconds=rerequest_after):
                campaign.archive_requested_at = now
                session.flush()
                enqueue_archive(campaign.id)
            return False
        if campaign.task:  # once, when nothing else is waited for (dealing is idempotent anyway)
            deal_tasks(session, campaign)
        return True

    return hook


def _any_sent(session: Session, campaign_id: str) -> bool:
    # A letter campaign that sent nothing (all failed or skipped) has no letters to zip.
    return bool(session.scalar(select(exists().where(Recipient.campaign_id == campaign_id,
                                                     Recipient.status == "sent"))))
