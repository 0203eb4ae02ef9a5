"""The read side of the service: what both doors (the CLI, the HTTP API) answer, as JSON-ready dicts
in the seed API's shapes. Each function opens its own session; errors are ValidationFailed,
NotFound or Conflict (storage.errors)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from storage import campaigns as repo
from storage.ids import BIGINT_MAX, is_int_id
from storage.campaign_messages import get_message, list_messages
from storage.campaign_settings import get_settings, settings_to_seed
from storage.errors import Conflict, NotFound, ValidationFailed
from storage.models import Campaign, Contact, StoredFile, Task, User
from storage.serialize import pagination, user_to_seed
from storage.statuses import IN_FLIGHT, CampaignStatus
from storage.timefmt import fmt
from storage.validation import TYPES
from worker.pipeline.app import App

# Recipients (their filter SQL), exports (XLSX), the object store and the status report are imported
# in the functions using them: the CLI's `campaigns show` imports this module and needs none of them.

STATUSES = (*(s.value for s in CampaignStatus), "sent")
"""The values ``list_campaigns`` filters on (``sent`` means completed, as in the seed)."""
MAX_PER_PAGE = 500
# Past the last page a list is empty; this bound keeps the row offset ((page - 1) x per_page) a
# 64-bit integer, as the database needs it (a larger one was an error of the database, a 500).
MAX_PAGE = 2**31 - 1


def check_page(page: int, per_page: int) -> None:
    """Raise ValidationFailed naming ``page`` / ``per_page`` unless 1 <= page <= MAX_PAGE and
    1 <= per_page <= MAX_PER_PAGE."""
    errors: dict[str, list[str]] = {}
    if not 1 <= page <= MAX_PAGE:
        errors["page"] = [f"The page must be between 1 and {MAX_PAGE}."]
    if not 1 <= per_page <= MAX_PER_PAGE:
        errors["per_page"] = [f"The per_page must be between 1 and {MAX_PER_PAGE}."]
    if errors:
        raise ValidationFailed(errors)


def _team_ids(teams: str | None) -> list[int] | None:
    if not teams:
        return None
    try:
        ids = [int(t) for t in teams.split(",") if t.strip()]
    except ValueError:
        ids = None
    if ids is None or not all(is_int_id(i) for i in ids):
        raise ValidationFailed({"teams": ["The teams must be a comma-separated list of integer ids."]})
    return ids


def list_campaigns(app: App, *, status: str | None = None, type: str | None = None, teams: str | None = None,
                   search: str | None = None, page: int = 1, per_page: int = 15, base_url: str = "") -> dict:
    """GET /campaigns: one page, newest first. ``teams`` is the comma-separated ids as given."""
    errors: dict[str, list[str]] = {}
    if status and status not in STATUSES:
        errors["status"] = [f"The status must be one of: {', '.join(STATUSES)}."]
    if type and type not in TYPES:
        errors["type"] = [f"The type must be one of: {', '.join(TYPES)}."]
    if errors:
        raise ValidationFailed(errors)
    check_page(page, per_page)
    team_ids = _team_ids(teams)
    with app.sessions() as session:
        rows, total = repo.list_campaigns(session, status=status, type=type, teams=team_ids, search=search,
                                          page=page, per_page=per_page)
        query = {"status": status, "type": type, "teams": teams, "search": search}
        held = repo.with_related(session, rows)  # noqa: F841 - keeps users and templates in the session
        # Campaigns in flight count their ledger; the others show the counters kept at finalise.
        live = repo.progress_of_many(session, [c.id for c in rows if c.status in IN_FLIGHT])
        return {"data": [repo.campaign_to_seed(session, c, live.get(c.id)) for c in rows],
                "pagination": pagination(total, page, per_page, "/campaigns", query, base_url)}


def show_campaign(app: App, campaign_id: str, *, conn: Connection | None = None) -> dict:
    """GET /campaigns/:id, with status and progress counted from the ledger; on ``conn`` (an
    autocommit connection the caller holds, e.g. the API request's) when given."""
    # Autocommit: the campaign is one statement; a telephone campaign's task users are read in a
    # second, rows that need no snapshot in common with it.
    with app.reads(bind=conn) if conn is not None else app.reads() as session:
        campaign, progress, held = repo.get_campaign_for_show(session, campaign_id)  # noqa: F841 - held while serialising
        return repo.campaign_to_seed(session, campaign, progress)


def recipients(app: App, campaign_id: str, *, search: str | None = None, page: int = 1, per_page: int = 15,
               base_url: str = "") -> dict:
    """GET /campaigns/:id/recipients, each with its delivery state."""
    from storage.recipients import list_recipients

    check_page(page, per_page)
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        items, total = list_recipients(session, campaign, page=page, per_page=per_page, search=search)
        return {"data": items, "pagination": pagination(total, page, per_page, f"/campaigns/{campaign.id}/recipients",
                                                         {"search": search}, base_url)}


def messages(app: App, campaign_id: str, *, page: int = 1, per_page: int = 15, base_url: str = "") -> dict:
    """GET /campaigns/:id/messages: the content sent, per contact, oldest first."""
    check_page(page, per_page)
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        rows, total = list_messages(session, campaign.id, page=page, per_page=per_page)
        return {"data": rows,
                "pagination": pagination(total, page, per_page, f"/campaigns/{campaign.id}/messages", None, base_url)}


def message(app: App, campaign_id: str, message_id: int) -> dict:
    """GET /campaigns/:id/messages/:message_id."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        if not is_int_id(message_id, BIGINT_MAX):
            raise NotFound(f"message {message_id} of campaign {campaign.id} not found")
        return get_message(session, campaign.id, message_id)


def _url(app: App, file: StoredFile) -> str:
    from storage.objectstore import URL_SECONDS

    return app.store.url(file.key, URL_SECONDS, filename=file.name)


def letters_url(app: App, campaign_id: str) -> dict:
    """``{"url"}``: a fresh URL to a letter campaign's ZIP, valid for 300 s. Conflict when the
    campaign is no letter campaign, its ZIP is not built yet, or it will never have one."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        if campaign.type != "letter":
            raise Conflict(f"campaign {campaign.id} is {'an' if campaign.type == 'email' else 'a'} {campaign.type} "
                           "campaign: it has no letters")
        file = session.get(StoredFile, campaign.letters_file_id) if campaign.letters_file_id else None
        if file is None and _closed(campaign):
            raise Conflict(f"campaign {campaign.id} is {campaign.status} and has no letters ZIP: no letter was sent")
        if file is None:
            raise Conflict("letters are not ready yet")
        return {"url": _url(app, file)}


def _closed(campaign: Campaign) -> bool:
    # The ZIP is built before a campaign is completed, and before a cancelled one is settled
    # (finalised_at): then none means no letter was sent, as for one cancelled before its fan-out.
    return (campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.FAILED)
            or campaign.finalised_at is not None
            or (campaign.status == CampaignStatus.CANCELLED and campaign.dispatched_at is None))


def tasks(app: App, campaign_id: str) -> dict:
    """``{"data": [...]}``: the telephone / follow-up tasks the campaign created, with user and contact."""
    with app.sessions() as session:
        campaign = repo.get_campaign(session, campaign_id)
        rows = session.execute(
            select(Task, User, Contact).outerjoin(User, User.id == Task.user_id)
            .outerjoin(Contact, Contact.id == Task.contact_id)
            .where(Task.campaign_id == campaign.id).order_by(Task.id)).all()
        return {"data": [_task_to_seed(task, user, contact) for task, user, contact in rows]}


def _task_to_seed(task: Task, user: User | None, contact: Contact | None) -> dict[str, Any]:
    return {
        "id": task.id, "campaign_id": task.campaign_id,
        "user": user_to_seed(user) or {"id": task.user_id},
        "contact": {"id": task.contact_id, "first_name": getattr(contact, "first_name", None),
                    "last_name": getattr(contact, "last_name", None),
                    "phone_number": getattr(contact, "mobile_phone_number", None)
                    or getattr(contact, "landline_phone_number", None)},
        "relations_path": task.relations_path, "start_at": fmt(task.start_at), "end_at": fmt(task.end_at),
        "created_at": fmt(task.created_at),
    }


def file_url(app: App, file_id: str) -> dict:
    """``{"id", "url"}``: a presigned download URL of a stored file, valid for 300 s."""
    with app.sessions() as session:
        file = session.get(StoredFile, file_id)
        if file is None:
            raise NotFound(f"file {file_id} not found")
        return {"id": file.id, "url": _url(app, file)}


def export_status(app: App, campaign_id: str, export_id: str) -> dict:
    """An export: pending, failed (with the reason) or done with a file_id."""
    from worker.pipeline.exports import export_to_seed, get_export

    with app.sessions() as session:
        return export_to_seed(get_export(session, campaign_id, export_id))


def show_settings(app: App) -> dict:
    """GET /campaigns/settings."""
    with app.sessions() as session:
        return settings_to_seed(get_settings(session), app.settings.campaign_domain_suffix)


def status(app: App) -> dict:
    """Queue depths (ready, delayed, dead) and the campaigns in flight with their progress."""
    from worker.pipeline.status import status_report

    return status_report(app)
