"""The write side of the service: what both doors (the CLI, the HTTP API) do, returning JSON-ready
dicts in the seed API's shapes. Each function opens its own transaction(s) and hands work to the
workers through ``app.dispatcher`` once it is committed; errors are ValidationFailed, NotFound or
Conflict (storage.errors). Acting on a campaign's lifecycle is in ``campaign_actions``."""

from __future__ import annotations

from typing import Any

from storage import campaigns as repo
from storage.campaign_settings import apply_settings, settings_to_seed
from storage.timefmt import now as utcnow
from worker.pipeline import campaign_service, exports, side_jobs
from worker.pipeline.app import App
from worker.pipeline.campaign_actions import (cancel_campaign, pause_campaign, queue_test_email, resume_campaign,
                                              send_campaign)

__all__ = ["cancel_campaign", "copy_campaign", "create_campaign", "delete_campaign", "pause_campaign",
           "preview_campaign", "preview_payload", "queue_test_email", "resume_campaign", "send_campaign",
           "start_export", "update_campaign", "update_settings"]


def create_campaign(app: App, payload: Any, user_id: int) -> dict:
    """POST /campaigns: the 201 shape, with status and progress. An approved campaign created with
    ``execute_now`` is dispatched at once (queued on Redis; inline it is left due for ``run``)."""
    with app.sessions.begin() as session:
        campaign = campaign_service.create(session, payload, user_id)
        shape = repo.campaign_to_seed(session, campaign, repo.progress_of(session, campaign))
    # The payload passed validation, so execute_now is a bool here.
    if campaign.approved and payload.get("execute_now") is True:
        app.dispatcher.dispatch(campaign.id)
    return shape


def update_campaign(app: App, campaign_id: str, payload: Any) -> dict:
    """PUT /campaigns/:id (Conflict once the campaign is sent): the seed's update shape."""
    with app.sessions.begin() as session:
        return repo.campaign_update_shape(session, campaign_service.update(session, campaign_id, payload))


def copy_campaign(app: App, campaign_id: str) -> dict:
    """POST /campaigns/:id/copy: the copy, a draft, in the 201 shape."""
    with app.sessions.begin() as session:
        campaign = repo.copy_campaign(session, repo.get_campaign(session, campaign_id), utcnow())
        return repo.campaign_to_seed(session, campaign, repo.progress_of(session, campaign))


def delete_campaign(app: App, campaign_id: str) -> None:
    """DELETE /campaigns/:id (Conflict once the campaign is sent)."""
    with app.sessions.begin() as session:
        repo.delete_campaign(session, repo.get_campaign(session, campaign_id, for_update=True))


def preview_campaign(app: App, campaign_id: str) -> dict:
    """``{"download_url"}``: the stored campaign rendered for its first recipient and stored
    (email: HTML, letter: PDF, telephone: a page of its first recipient and its task), valid 300 s."""
    return side_jobs.build_preview(app, campaign_id)


def preview_payload(app: App, payload: Any, user_id: int | None) -> dict:
    """POST /campaigns/preview: as ``preview_campaign``, for the unsaved campaign of a create payload."""
    return side_jobs.build_payload_preview(app, payload, user_id)


def start_export(app: App, campaign_id: str) -> dict:
    """Record an XLSX export of the recipients and hand it to the workers (inline it runs here);
    returns the 202 shape ``{"export_id", "file_id": null, "status": "pending"}``."""
    with app.sessions.begin() as session:
        job = exports.start_export(session, campaign_id)
        shape = exports.export_to_seed(job)
    app.dispatcher.export(job.campaign_id, job.id)
    return shape


def update_settings(app: App, payload: Any) -> dict:
    """PUT /campaigns/settings: store the settings and return them as GET shows them."""
    with app.sessions.begin() as session:
        return settings_to_seed(apply_settings(session, payload), app.settings.campaign_domain_suffix)
