"""The seed's campaign endpoints: list, show, create, update, copy, delete, and what a campaign made."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Connection

from worker.api import schemas as s
from worker.api.auth import Caller, caller, connection, service
from worker.api.responses import JSON
from worker.pipeline import commands, queries
from worker.pipeline.app import App

router = APIRouter(prefix="/campaigns", tags=["campaigns"])
# Reads that share the request's connection with the token check (worker.api.auth.reading_caller).
reads = APIRouter(prefix="/campaigns", tags=["campaigns"])

ERRORS = {401: {"model": s.Message}, 404: {"model": s.Message}}
INVALID = {422: {"model": s.Invalid}, 400: {"model": s.Message}, 413: {"model": s.Message}}
CONFLICT = {409: {"model": s.Message}}


def base_url(request: Request) -> str:
    """Where the client reached us (behind a proxy: with uvicorn's --proxy-headers), for absolute URLs."""
    return str(request.base_url).rstrip("/")


def body(payload: s.Open) -> dict:
    """The JSON object as sent (every key the client gave, none added)."""
    return payload.model_dump(exclude_unset=True)


@router.get("", response_model=s.CampaignPage, responses={**ERRORS, 422: {"model": s.Invalid}})
async def list_campaigns(request: Request, status: str | None = None, type: str | None = None, teams: str | None = None,
                   search: str | None = None, page: int = 1, per_page: int = 15,
                   app: App = Depends(service)) -> JSON:
    """Campaigns, newest first: filter by `status`, `type`, `teams` (comma-separated ids), `search` (name)."""
    return JSON(queries.list_campaigns(app, status=status, type=type, teams=teams, search=search, page=page,
                                       per_page=per_page, base_url=base_url(request)))


@router.post("", status_code=201, response_model=s.Campaign,
             responses={**ERRORS, **INVALID})
def create_campaign(payload: s.CampaignIn, who: Caller = Depends(caller), app: App = Depends(service)) -> JSON:
    """Create a campaign owned by the token's user; with `execute_now` (approved) it is dispatched at once."""
    return JSON(commands.create_campaign(app, body(payload), who.user_id), status_code=201)


@reads.get("/{campaign_id}", response_model=s.Campaign, responses={**ERRORS})
async def show_campaign(campaign_id: str, app: App = Depends(service), conn: Connection = Depends(connection)) -> JSON:
    """A campaign, with `status`, `progress` and, when it stopped on a fault, `error`."""
    return JSON(queries.show_campaign(app, campaign_id, conn=conn))


@router.put("/{campaign_id}", response_model=s.CampaignUpdated,
            responses={**ERRORS, **INVALID, **CONFLICT})
def update_campaign(campaign_id: str, payload: s.CampaignIn, app: App = Depends(service)) -> JSON:
    """Replace a campaign's fields (409 once it is sent)."""
    return JSON(commands.update_campaign(app, campaign_id, body(payload)))


@router.delete("/{campaign_id}", status_code=204, response_model=None, responses={**ERRORS, **CONFLICT})
def delete_campaign(campaign_id: str, app: App = Depends(service)) -> Response:
    """Delete a campaign (409 once it is sent)."""
    commands.delete_campaign(app, campaign_id)
    return Response(status_code=204)


@router.post("/{campaign_id}/copy", status_code=201, response_model=s.Campaign,
             responses={**ERRORS})
def copy_campaign(campaign_id: str, app: App = Depends(service)) -> JSON:
    """A draft copy of the campaign ("<name> - copy")."""
    return JSON(commands.copy_campaign(app, campaign_id), status_code=201)


@router.get("/{campaign_id}/messages", response_model=s.MessagePage, responses={**ERRORS})
def list_messages(request: Request, campaign_id: str, page: int = 1, per_page: int = 15,
                  app: App = Depends(service)) -> JSON:
    """The content actually sent, one message per contact."""
    return JSON(queries.messages(app, campaign_id, page=page, per_page=per_page, base_url=base_url(request)))


@router.get("/{campaign_id}/messages/{message_id}", response_model=s.CampaignMessage,
            responses={**ERRORS})
async def show_message(campaign_id: str, message_id: int, app: App = Depends(service)) -> JSON:
    """The content sent to one contact."""
    return JSON(queries.message(app, campaign_id, message_id))


@router.get("/{campaign_id}/letters", response_model=s.Url,
            responses={**ERRORS, **CONFLICT})
async def letters(campaign_id: str, app: App = Depends(service)) -> JSON:
    """A fresh URL to the ZIP of the letters, valid for 300 seconds (409 until the ZIP is made)."""
    return JSON(queries.letters_url(app, campaign_id))


@router.get("/{campaign_id}/recipients", response_model=s.RecipientPage, responses={**ERRORS})
def recipients(request: Request, campaign_id: str, search: str | None = None, page: int = 1, per_page: int = 15,
               app: App = Depends(service)) -> JSON:
    """The contacts the campaign selects, each with its `delivery` (status, reason, at)."""
    return JSON(queries.recipients(app, campaign_id, search=search, page=page, per_page=per_page,
                                   base_url=base_url(request)))


@router.get("/{campaign_id}/recipients/export", status_code=202, response_model=s.ExportState,
            responses={**ERRORS})
def export(campaign_id: str, app: App = Depends(service)) -> JSON:
    """Queue an XLSX export of the recipients."""
    return JSON(commands.start_export(app, campaign_id), status_code=202)


@router.get("/{campaign_id}/recipients/export/{export_id}", response_model=s.ExportState,
            responses={**ERRORS})
async def export_status(campaign_id: str, export_id: str, app: App = Depends(service)) -> JSON:
    """`pending`, `failed` (with a `reason`) or `done` with the `file_id` to download (`GET /files/{id}`)."""
    return JSON(queries.export_status(app, campaign_id, export_id))


@router.get("/{campaign_id}/tasks", response_model=s.Tasks, responses={**ERRORS})
def tasks(campaign_id: str, app: App = Depends(service)) -> JSON:
    """The telephone and follow-up tasks the campaign created."""
    return JSON(queries.tasks(app, campaign_id))
