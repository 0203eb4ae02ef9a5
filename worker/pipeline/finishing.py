"""What must happen before a campaign is completed (its tasks dealt, a letter campaign's ZIP built),
and completing it as soon as its last recipient is done rather than at the scheduler's next tick."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from scheduler.jobs import finalise
from storage.ledger import has_rows
from storage.models import Campaign
from storage.timefmt import now as utcnow
from worker.pipeline.app import App
from worker.channels.telephone import deal_tasks


def before_complete(enqueue_archive: Callable[[str], None], rerequest_after: float) -> Callable[[Session, Campaign], bool]:
    """The scheduler's finalise hook. Returns False while the campaign must wait (its ZIP is being built)."""

    def hook(session: Session, campaign: Campaign) -> bool:
        # A letter campaign that sent nothing (all failed or skipped) has no letters to zip.
        if campaign.type == "letter" and campaign.letters_file_id is None and has_rows(session, campaign.id, ("sent",)):
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


def hook_for(app: App, enqueue_archive: Callable[[str], None]) -> Callable[[Session, Campaign], bool]:
    """``before_complete`` for this app: a ZIP asked for again when a lease passed without it."""
    return before_complete(enqueue_archive, rerequest_after=app.settings.lease_seconds)


def finish_now(app: App, campaign_id: str, enqueue_archive: Callable[[str], None]) -> bool:
    """Finalise the campaign if none of its recipients is left open; True when it was (completed,
    failed, or a cancelled campaign settled).

    Workers call it after the batches and the ZIP they finish, so a campaign is completed (and a
    letter campaign's ZIP asked for) at once instead of up to SCHEDULER_INTERVAL later, twice for
    letters. The scheduler's finalise still does the same for anything that slipped through.
    """
    return bool(finalise(app.sessions, utcnow(), hook_for(app, enqueue_archive), campaign_ids=[campaign_id]))
