"""Completing a campaign as soon as its last recipient is done, rather than at the scheduler's next tick."""

from __future__ import annotations

from datetime import timedelta

from scheduler.jobs import Enqueue
from storage.lifecycle import finalise
from storage.timefmt import now as utcnow
from worker.pipeline.app import App


def finish_now(app: App, campaign_id: str, enqueue: Enqueue) -> bool:
    """Finalise the campaign if none of its recipients is left open; True when it was (completed,
    failed, or a cancelled campaign settled).

    Workers call it after the batches and the ZIP they finish, so a campaign is completed (and a
    letter campaign's ZIP asked for) at once instead of up to SCHEDULER_INTERVAL later, twice for
    letters. The scheduler's finalise still does the same for anything that slipped through.
    """
    return bool(finalise(app.sessions, utcnow(), enqueue.archive,
                         rerequest_after=timedelta(seconds=app.settings.lease_seconds), campaign_ids=[campaign_id]))
