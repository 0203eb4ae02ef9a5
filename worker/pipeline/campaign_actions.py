"""Acting on a campaign: send now, pause, resume, cancel, and test emails (re-exported by
``worker.pipeline.commands``). Each returns what both doors print or answer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from storage import campaigns as repo, lifecycle
from storage.addresses import is_email
from storage.errors import ValidationFailed
from storage.models import Campaign
from storage.timefmt import now as utcnow
from worker.pipeline import side_jobs
from worker.pipeline.app import App
from worker.pipeline.campaign_service import campaign_problems
from worker.pipeline.queries import show_campaign


def send_campaign(app: App, campaign_id: str) -> dict:
    """Dispatch now (the API's execute_now): ValidationFailed naming ``campaign`` with every reason
    it cannot be sent, else the campaign as ``show_campaign`` returns it. Inline (``memory://``
    without a worker) it is left due for ``run``'s scheduler."""
    with app.sessions.begin() as session:
        campaign = repo.get_campaign(session, campaign_id, for_update=True)
        problems = campaign_problems(session, campaign)
        if problems:
            raise ValidationFailed({"campaign": problems}, "The campaign cannot be sent as it is.")
        lifecycle.send_now(session, campaign, utcnow())
    app.dispatcher.dispatch(campaign.id)
    return show_campaign(app, campaign.id)


Transition = Callable[[Session, Campaign, datetime], Campaign]


def _transition(app: App, campaign_id: str, action: Transition) -> str:
    """Apply a lifecycle transition in its own transaction; return the campaign's id."""
    with app.sessions.begin() as session:
        return action(session, repo.get_campaign(session, campaign_id, for_update=True), utcnow()).id


def pause_campaign(app: App, campaign_id: str) -> dict:
    """Stop taking new recipients (each worker thread finishes its SMTP round); the campaign as shown."""
    return show_campaign(app, _transition(app, campaign_id, lifecycle.pause))


def resume_campaign(app: App, campaign_id: str) -> dict:
    """Go on after a pause (or a brake) with the recipients not sent yet; the campaign as shown."""
    key = _transition(app, campaign_id, lifecycle.resume)
    app.dispatcher.resume(key)
    return show_campaign(app, key)


def cancel_campaign(app: App, campaign_id: str) -> dict:
    """Stop for good (recipients not yet taken are skipped, reason ``cancelled``); the campaign as shown."""
    return show_campaign(app, _transition(app, campaign_id, lifecycle.cancel))


def check_email(email: str) -> None:
    """Raise ValidationFailed naming ``email`` unless it is an address a test email can go to."""
    if not is_email(email):
        raise ValidationFailed({"email": ["The email must be a valid email address."]})


def check_test_email(app: App, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                     user_id: int | None = None) -> None:
    """Raise what a test email would fail on before it is queued: a bad address (``email``), an
    unknown campaign, or a payload that does not validate for rendering."""
    check_email(email)
    with app.sessions() as session:
        if campaign_id:
            repo.get_campaign(session, campaign_id)
        else:
            side_jobs.campaign_from_payload(session, payload, user_id)


def queue_test_email(app: App, email: str, *, campaign_id: str | None = None, payload: dict | None = None,
                     user_id: int | None = None) -> dict:
    """A ``[TEST]`` email of a stored campaign (``campaign_id``) or of a create payload, to ``email``:
    checked now, so a mistake is an error here and not a dead message, then handed to the workers
    (inline it is sent here). Returns ``{"email": email}``."""
    check_test_email(app, email, campaign_id=campaign_id, payload=payload, user_id=user_id)
    app.dispatcher.test_email(email, campaign_id=campaign_id, payload=payload, user_id=user_id)
    return {"email": email}
