"""Acting on campaigns: send, pause, resume, cancel, previews and test emails; and the settings."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from worker.api import schemas as s
from worker.api.auth import Caller, caller, service
from worker.api.responses import JSON
from worker.api.routes_campaigns import CONFLICT, ERRORS, INVALID, body
from worker.pipeline import commands, queries
from worker.pipeline.app import App

router = APIRouter(prefix="/campaigns", tags=["campaigns"])
settings_router = APIRouter(prefix="/campaigns/settings", tags=["settings"])


@settings_router.get("", response_model=s.Settings, responses={401: {"model": s.Message}})
async def show_settings(app: App = Depends(service)) -> JSON:
    """The sending domain (or slug) and the consent settings."""
    return JSON(queries.show_settings(app))


@settings_router.put("", response_model=s.Settings, responses={401: {"model": s.Message},
                                                         **INVALID})
def update_settings(payload: s.SettingsIn, app: App = Depends(service)) -> JSON:
    """Set the sending domain or slug and the consent settings."""
    return JSON(commands.update_settings(app, body(payload)))


@router.post("/preview", response_model=s.DownloadUrl, responses={**ERRORS, **INVALID})
def preview_payload(payload: s.CampaignIn, who: Caller = Depends(caller), app: App = Depends(service)) -> JSON:
    """Render a campaign payload (as for create) and return a URL to it, valid for 300 seconds."""
    return JSON(commands.preview_payload(app, body(payload), who.user_id))


@router.post("/test-email", status_code=202, response_model=s.EmailQueued,
             responses={**ERRORS, **INVALID})
def test_email_payload(payload: s.CampaignIn, who: Caller = Depends(caller), app: App = Depends(service)) -> JSON:
    """Queue a `[TEST]` email of a campaign payload (as for create) to `email`, or to the token's user."""
    fields = body(payload)
    email = fields.pop("email", None) or who.email or ""
    return JSON(commands.queue_test_email(app, email, payload=fields, user_id=who.user_id), status_code=202)


@router.get("/{campaign_id}/preview", response_model=s.DownloadUrl, responses={**ERRORS})
def preview(campaign_id: str, app: App = Depends(service)) -> JSON:
    """Render the campaign for its first recipient and return a URL to it, valid for 300 seconds."""
    return JSON(commands.preview_campaign(app, campaign_id))


@router.post("/{campaign_id}/test-email", status_code=202, response_model=s.EmailQueued,
             responses={**ERRORS, **INVALID})
def test_email(campaign_id: str, payload: s.TestEmailIn, who: Caller = Depends(caller),
               app: App = Depends(service)) -> JSON:
    """Queue a `[TEST]` email of the stored campaign to `email`."""
    email = body(payload).get("email")
    return JSON(commands.queue_test_email(app, email if isinstance(email, str) else "", campaign_id=campaign_id,
                                          user_id=who.user_id), status_code=202)


def _action(name: str, act, doc: str) -> None:
    def endpoint(campaign_id: str, app: App = Depends(service)) -> JSON:
        return JSON(act(app, campaign_id))

    endpoint.__name__, endpoint.__doc__ = f"{name}_campaign", doc
    router.post(f"/{{campaign_id}}/{name}", response_model=s.Campaign,
                responses={**ERRORS, **CONFLICT, 422: {"model": s.Invalid}})(endpoint)


_action("send", commands.send_campaign, "Dispatch now (as `execute_now`).")
_action("pause", commands.pause_campaign, "Stop taking new recipients; each worker finishes its SMTP round.")
_action("resume", commands.resume_campaign, "Go on after a pause or a brake, with the recipients not sent yet.")
_action("cancel", commands.cancel_campaign, "Stop for good; recipients not yet taken are skipped (`cancelled`).")
