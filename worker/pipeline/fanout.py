"""Fan-out: one campaign becomes ledger rows (one set-based INSERT) and id-range delivery messages."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy.orm import Session

from storage import lifecycle
from storage.campaign_messages import campaign_dictionary
from storage.filters import parse_filters
from storage.ledger import Batch, insert_recipients, open_batches
from storage.models import Campaign
from storage.timefmt import now as utcnow
from worker.pipeline.app import App
from worker.pipeline.campaign_service import campaign_problems

log = structlog.get_logger()


LETTER_BATCH = 50  # one document laid out and one part stored per message: ~2.5 s of CPU (200 held one ~12 s)


def batch_size(app: App, campaign_type: str) -> int:
    """Recipients per delivery message: smaller for letters, so batches finish well inside STALL_SECONDS."""
    size = app.settings.delivery_batch_size
    return min(size, LETTER_BATCH) if campaign_type == "letter" else size


def _sample(app: App, session: Session, campaign: Campaign) -> str | None:
    """The campaign rendered for a contact with no data, for its archive's dictionary, or None."""
    from worker.channels.campaign_runtime import build_runtime

    try:  # not through app.runtimes: a runtime cached now would lack the dictionary being made
        return build_runtime(session, campaign, app.settings.campaign_domain_suffix).sample()
    except Exception as exc:  # noqa: BLE001 - the sample only makes the archive smaller: never fail a fan-out for it
        log.warning("dispatch.no_archive_sample", error=str(exc)[:200])
        return None


def dispatch(app: App, campaign_id: str, enqueue: Callable[[list[Batch]], None]) -> None:
    """Validate the campaign again, insert its ledger rows and enqueue their delivery.

    Safe to run twice: a campaign that was already fanned out is left to reconcile, which
    re-enqueues whatever work was lost.
    """
    structlog.contextvars.bind_contextvars(campaign_id=campaign_id)
    now = utcnow()
    with app.sessions.begin() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True)
        if campaign is None:
            log.warning("dispatch.unknown_campaign")
            return
        # Enqueued directly (the API's execute_now, `campaigns send`), it is claimed here; one a
        # scheduler claimed is `sending` already; one fanned out before is left to reconcile.
        if not lifecycle.claim_for_dispatch(campaign, now):
            log.info("dispatch.skipped", status=campaign.status, dispatched=campaign.dispatched_at is not None)
            return
        problems = campaign_problems(session, campaign)
        if campaign.type == "email" and not app.smtp_configured:
            problems.append("no SMTP server is configured for the workers: set SMTP_URL")
        if problems:
            lifecycle.fail_unsendable(campaign, problems)
            log.error("dispatch.failed", error=campaign.error)
            return
        inserted = insert_recipients(session, campaign, parse_filters(campaign.filter or []), now)
        total, skipped = inserted.total, inserted.skipped
        if campaign.type in ("email", "letter"):  # set once: what is archived from now on is read with it
            campaign.archive_dictionary = campaign_dictionary(session, campaign, _sample(app, session, campaign))
        lifecycle.mark_dispatched(campaign, total, skipped, now)
        channel = campaign.type
    if skipped:  # committed: counted with the outcomes the workers write
        from worker.runtime.metrics import count_recipients  # prometheus_client: once a campaign fans out

        count_recipients({(channel, "skipped"): skipped})
    size = batch_size(app, campaign.type)
    batches = inserted.batches(campaign_id, size)  # consecutive ids: no second pass over the rows
    if batches is None:
        with app.sessions() as session:
            batches = open_batches(session, campaign_id, size)
    enqueue(batches)
    log.info("dispatch.done", recipients=total, skipped=skipped, batches=len(batches))
