"""What must happen before a campaign is completed: its tasks dealt, a letter campaign's ZIP built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from storage.models import Campaign
from storage.timefmt import now as utcnow
from worker.tasks import deal_tasks


def before_complete(enqueue_archive: Callable[[str], None], rerequest_after: float) -> Callable[[Session, Campaign], bool]:
    """The scheduler's finalise hook. Returns False while the campaign must wait (its ZIP is being built)."""

    def hook(session: Session, campaign: Campaign) -> bool:
        if campaign.type == "letter" and campaign.letters_file_id is None:
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
